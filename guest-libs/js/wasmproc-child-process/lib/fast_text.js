// UTF-8 decoding by the engine's own TextDecoder. Why: the npm `buffer`
// port decodes UTF-8 in a JavaScript loop, which the engine inside a
// component (SpiderMonkey, without a JIT) runs at well under 1 MB/s, so
// `exec('seq 1 100000')` took a second where Node takes 30 ms; the
// engine's TextDecoder is native code. Buffer's UTF-8 `toString` (and so
// StringDecoder's, and `setEncoding('utf8')`) goes through it, with
// Node's results: invalid sequences become U+FFFD, and a BOM is kept.

import { Buffer } from 'buffer';

const UTF8 = new Set([undefined, 'utf8', 'utf-8']);

if (typeof TextDecoder === 'function' && !Buffer.prototype.toString.fastUtf8) {
  const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  const original = Buffer.prototype.toString;
  const toString = function (encoding, start, end) {
    const name = typeof encoding === 'string' ? encoding.toLowerCase() : encoding;
    if (!UTF8.has(name)) return original.call(this, encoding, start, end);
    const from = start === undefined ? 0 : Math.max(0, Math.trunc(Number(start)) || 0);
    const to = end === undefined ? this.length : Math.min(this.length, Math.trunc(Number(end)) || 0);
    return to <= from ? '' : decoder.decode(this.subarray(from, to));
  };
  toString.fastUtf8 = true;
  Buffer.prototype.toString = toString;
}
