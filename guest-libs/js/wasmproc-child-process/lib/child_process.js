// Node's `child_process` for wasmproc guests: exec, execFile, spawn, fork,
// execSync, execFileSync, spawnSync, and ChildProcess objects with Node's
// events, on wasmproc:process (through _bindings.js) and the event loop of
// loop.js. What differs from Node is listed in the package's README.

import { EventEmitter } from 'events';
import { Buffer } from 'buffer';
import { StringDecoder } from 'string_decoder';
import './fast_text.js';
import { promisify } from 'util';
import * as wit from './_bindings.js';
import * as loop from './loop.js';
import { systemError } from './errors.js';

/** Linux signal numbers by name (what kill and killSignal take). */
export const SIGNALS = {
  SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGTRAP: 5, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8,
  SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15,
  SIGSTKFLT: 16, SIGCHLD: 17, SIGCONT: 18, SIGSTOP: 19, SIGTSTP: 20, SIGTTIN: 21, SIGTTOU: 22,
  SIGURG: 23, SIGXCPU: 24, SIGXFSZ: 25, SIGVTALRM: 26, SIGPROF: 27, SIGWINCH: 28, SIGIO: 29,
  SIGPWR: 30, SIGSYS: 31,
};
const SIGNAL_NAMES = Object.fromEntries(Object.entries(SIGNALS).map(([k, v]) => [v, k]));

function signalNumber(sig, fallback) {
  if (sig === undefined || sig === null) return SIGNALS[fallback];
  if (typeof sig === 'number' && SIGNAL_NAMES[sig]) return sig;
  if (typeof sig === 'string' && SIGNALS[sig]) return SIGNALS[sig];
  const err = new TypeError(`Unknown signal: ${sig}`);
  err.code = 'ERR_UNKNOWN_SIGNAL';
  throw err;
}

const signalName = (n) => (n === null ? null : SIGNAL_NAMES[n] ?? String(n));

/** `{ NAME: value }` -> [[NAME, value]]. Node's default is the parent's
 * whole environment; here it is none (each name must be granted). */
function envPairs(env) {
  return env ? Object.entries(env).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]) : [];
}

function stdioOf(options) {
  let s = options.stdio ?? 'pipe';
  if (typeof s === 'string') s = [s, s, s];
  const one = (x) => {
    if (x === undefined || x === null || x === 'pipe' || x === 'overlapped') return 'pipe';
    if (x === 'inherit' || x === 'ignore') return x;
    if (x === 0 || x === 1 || x === 2 || x === process.stdout || x === process.stderr) return 'inherit';
    if (x === 'ipc') return 'ignore';
    throw new TypeError(`stdio ${String(x)} is not supported by wasmproc (use 'pipe', 'inherit' or 'ignore')`);
  };
  return [one(s[0]), one(s[1]), one(s[2])];
}

function toBytes(chunk, encoding) {
  if (typeof chunk === 'string') return Buffer.from(chunk, encoding || 'utf8');
  if (chunk instanceof Uint8Array) return chunk;
  throw new TypeError('The "chunk" argument must be of type string or an instance of Buffer or Uint8Array');
}

function decode(buf, encoding) {
  return encoding && encoding !== 'buffer' ? buf.toString(encoding) : buf;
}

const encoder = new TextEncoder();

/** The UTF-8 length of `text`, by the engine's own encoder. */
const utf8Length = (text) => encoder.encode(text).length;

/** A child's stdout or stderr: emits 'data' (Buffer, or string after
 * setEncoding), then 'end' and 'close'. */
export class Readable extends EventEmitter {
  constructor() {
    super();
    this.encoding = null;
    this.readable = true;
    this.destroyed = false;
  }
  setEncoding(encoding) {
    this.encoding = encoding;
    // Keeps a character split between two reads whole, as Node's streams.
    this.decoder = new StringDecoder(encoding);
    return this;
  }
  _push(bytes) {
    if (this.destroyed) return;
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    if (!this.decoder) this.emit('data', buf);
    else {
      const text = this.decoder.write(buf);
      if (text.length > 0) this.emit('data', text);
    }
  }
  _end() {
    if (this.decoder && !this.destroyed) {
      const rest = this.decoder.end();
      if (rest.length > 0) this.emit('data', rest);
    }
    this.readable = false;
    this.emit('end');
    this.emit('close');
  }
  destroy() {
    this.destroyed = true;
    return this;
  }
  pipe(dest) {
    this.on('data', (d) => dest.write(d));
    if (dest !== process.stdout && dest !== process.stderr) this.on('end', () => dest.end());
    return dest;
  }
  resume() {
    return this;
  }
  pause() {
    return this;
  }
}

/** A child's stdin: write() queues bytes that the loop writes as the pipe
 * takes them; end() closes it (EOF) once all is written. */
export class Writable extends EventEmitter {
  constructor() {
    super();
    this.queue = [];
    this.ending = false;
    this.writable = true;
    this.destroyed = false;
    this.onChange = () => {};
  }
  write(chunk, encoding, callback) {
    if (typeof encoding === 'function') [callback, encoding] = [encoding, undefined];
    if (this.ending) {
      const err = new Error('write after end');
      err.code = 'ERR_STREAM_WRITE_AFTER_END';
      loop.setImmediate(() => (callback ? callback(err) : this.emit('error', err)));
      return false;
    }
    this.queue.push([toBytes(chunk, encoding), callback]);
    this.onChange();
    return true;
  }
  end(chunk, encoding, callback) {
    if (typeof chunk === 'function') [callback, chunk] = [chunk, undefined];
    if (typeof encoding === 'function') [callback, encoding] = [encoding, undefined];
    if (chunk !== undefined && chunk !== null) this.write(chunk, encoding);
    this.ending = true;
    this.writable = false;
    if (callback) this.once('finish', callback);
    this.onChange();
    return this;
  }
  destroy() {
    this.destroyed = true;
    this.ending = true;
    this.queue = [];
    this.onChange();
    return this;
  }
}

/** A loop source writing a Writable's queue into an output stream. */
function stdinSource(writable, stream, onClosed) {
  const source = {
    pollables() {
      if (writable.queue.length > 0 && !writable.destroyed) return [[stream.subscribe(), () => this.pump()]];
      if (writable.ending) {
        this.finish();
        return [];
      }
      return [];
    },
    pump() {
      try {
        while (writable.queue.length > 0) {
          const n = stream.checkWrite();
          if (n === 0) return;
          const [bytes, cb] = writable.queue[0];
          const part = bytes.subarray(0, Math.min(n, bytes.length));
          stream.write(part);
          if (part.length < bytes.length) writable.queue[0][0] = bytes.subarray(part.length);
          else {
            writable.queue.shift();
            if (cb) loop.setImmediate(cb);
          }
        }
        stream.flush();
        if (writable.ending) this.finish();
      } catch (e) {
        // The child closed its stdin (EPIPE in Node).
        writable.queue = [];
        this.finish();
        const err = new Error('write EPIPE');
        err.code = 'EPIPE';
        err.errno = -32;
        err.syscall = 'write';
        if (writable.listenerCount('error') > 0) writable.emit('error', err);
      }
    },
    finish() {
      if (this.closed) return;
      this.closed = true;
      loop.remove(source);
      stream.close();
      writable.emit('finish');
      writable.emit('close');
      onClosed();
    },
    /** Closes the stream without writing what is still queued. */
    close() {
      writable.queue = [];
      writable.ending = true;
      this.finish();
    },
  };
  writable.onChange = () => {
    if (!source.closed && (writable.queue.length > 0 || writable.ending)) loop.add(source);
  };
  writable.onChange();
  return source;
}

/** A loop source reading an input stream into a Readable. */
function readSource(readable, stream, onEnd) {
  const source = {
    pollables() {
      return [[stream.subscribe(), () => this.read()]];
    },
    read() {
      const bytes = stream.read(65536);
      if (bytes === null) {
        loop.remove(source);
        stream.close();
        readable._end();
        onEnd();
      } else if (bytes.length > 0) {
        readable._push(bytes);
      }
    },
  };
  loop.add(source);
  return source;
}

/** A child process, as Node's: events 'spawn', 'exit' (code, signal),
 * 'close' (code, signal), 'error', and for a fork 'message', 'disconnect'. */
export class ChildProcess extends EventEmitter {
  constructor() {
    super();
    this.pid = undefined;
    this.stdin = null;
    this.stdout = null;
    this.stderr = null;
    this.stdio = [null, null, null];
    this.exitCode = null;
    this.signalCode = null;
    this.killed = false;
    this.connected = false;
    this.spawnfile = undefined;
    this.spawnargs = [];
    this._open = 0; // streams (and the channel) still open, for 'close'
    this._exited = false;
    this._handle = undefined;
  }

  kill(signal) {
    if (this._handle === undefined || this._exited) return false;
    const n = signalNumber(signal, 'SIGTERM');
    try {
      this._handle.kill(n);
      this.killed = true;
      return true;
    } catch (e) {
      this.emit('error', systemError(e, 'kill'));
      return false;
    }
  }

  ref() {}
  unref() {}

  _streamClosed() {
    this._open -= 1;
    this._maybeClose();
  }

  _maybeClose() {
    if (this._exited && this._open === 0 && !this._closed) {
      this._closed = true;
      if (this._handle) this._handle.close();
      this.emit('close', this.exitCode, this.signalCode);
    }
  }

  /** `status`: { code, signal, timedOut }; `timedOut`: the host's
   * deadline (the `timeout` option) killed it, as Node's kill would. */
  _onExit(status) {
    this._exited = true;
    if (status.timedOut) this.killed = true;
    this.exitCode = status.code;
    this.signalCode = signalName(status.signal);
    this.emit('exit', this.exitCode, this.signalCode);
    this._maybeClose();
  }

  /** Emits 'error' and 'close' for a child that could not start. */
  _failed(err) {
    this._exited = true;
    this._closed = true;
    loop.setImmediate(() => {
      this.emit('error', err);
      for (const stream of [this.stdout, this.stderr]) if (stream) stream._end();
      this.emit('close', err.errno ?? -1, null);
    });
  }
}

function exitSource(child, handle) {
  const source = {
    pollables() {
      return [[handle.subscribeExit(), () => this.check()]];
    },
    check() {
      const status = handle.tryWait();
      if (status === undefined) return;
      loop.remove(source);
      child._onExit(status);
    },
  };
  loop.add(source);
}

function normalizeArgs(args, options) {
  if (args !== undefined && !Array.isArray(args)) [options, args] = [args, []];
  return [(args ?? []).map(String), { ...(options ?? {}) }];
}

/** spawn(command[, args][, options]): options cwd, env, stdio, timeout
 * and killSignal (the host's deadline: it sends killSignal to the child's
 * group, then SIGKILL if the group outlives its grace period), uid, gid,
 * shell (runs `shell -c`, needs that program granted). */
export function spawn(command, args, options) {
  [args, options] = normalizeArgs(args, options);
  if (options.shell) {
    const sh = typeof options.shell === 'string' ? options.shell : '/bin/sh';
    args = ['-c', [command, ...args].join(' ')];
    command = sh;
  }
  const child = new ChildProcess();
  child.spawnfile = command;
  child.spawnargs = [command, ...args];
  const stdio = stdioOf(options);
  let handle;
  try {
    const killSignal = signalNumber(options.killSignal, 'SIGTERM');
    handle = wit.spawn(command, args, {
      cwd: options.cwd,
      env: envPairs(options.env),
      stdin: stdio[0],
      stdout: stdio[1],
      stderr: stdio[2],
      uid: options.uid,
      gid: options.gid,
      timeoutMs: options.timeout > 0 ? options.timeout : undefined,
      killSignal,
    });
  } catch (e) {
    if (e instanceof TypeError) throw e;
    // As in Node, the piped streams exist even when the child did not
    // start: stdin takes (and drops) what is written, stdout and stderr end.
    if (stdio[0] === 'pipe') {
      child.stdin = new Writable();
      child.stdin.onChange = () => (child.stdin.queue = []);
    }
    if (stdio[1] === 'pipe') child.stdout = new Readable();
    if (stdio[2] === 'pipe') child.stderr = new Readable();
    child.stdio = [child.stdin, child.stdout, child.stderr];
    child._failed(systemError(e, `spawn ${command}`, command, args));
    return child;
  }
  child._handle = handle;
  child.pid = handle.pid;
  if (handle.stdin) {
    // As in Node, 'close' waits for stdout, stderr (and a channel), not
    // for stdin; stdin is closed at 'close' if it is still open.
    child.stdin = new Writable();
    const source = stdinSource(child.stdin, handle.stdin, () => {});
    child.once('close', () => source.close());
  }
  for (const name of ['stdout', 'stderr']) {
    if (!handle[name]) continue;
    const r = new Readable();
    child[name] = r;
    child._open += 1;
    readSource(r, handle[name], () => child._streamClosed());
  }
  child.stdio = [child.stdin, child.stdout, child.stderr];
  exitSource(child, handle);
  loop.setImmediate(() => child.emit('spawn'));
  return child;
}

/** As Node's exec and execFile: their stdout and stderr emit strings in
 * `encoding` (default utf8) unless it is 'buffer'. */
function setEncoding(child, encoding = 'utf8') {
  if (encoding === 'buffer') return;
  for (const stream of [child.stdout, child.stderr]) if (stream) stream.setEncoding(encoding);
}

/** Collects a child's output for execFile/exec: calls back (error, stdout,
 * stderr) on 'close', as Node does. */
function collect(child, cmd, options, callback) {
  const encoding = options.encoding ?? 'utf8';
  const maxBuffer = options.maxBuffer ?? 1024 * 1024;
  const utf8 = /^utf-?8$/i.test(encoding);
  const out = { stdout: [], stderr: [] };
  const size = { stdout: 0, stderr: 0 };
  let failure = null;
  for (const name of ['stdout', 'stderr']) {
    if (!child[name]) continue;
    child[name].on('data', (d) => {
      // Text (a stream with an encoding) stays text: encoding it back to
      // bytes in JavaScript is what made a large exec slow.
      const text = typeof d === 'string' && utf8;
      if (typeof d === 'string' && !text) d = Buffer.from(d, encoding);
      size[name] += text ? utf8Length(d) : d.length;
      out[name].push(text || Buffer.isBuffer(d) ? d : Buffer.from(d));
      if (size[name] > maxBuffer && !failure) {
        failure = new RangeError(`${name} maxBuffer length exceeded`);
        failure.code = 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER';
        child.kill(options.killSignal ?? 'SIGTERM');
      }
    });
  }
  let done = false;
  const finish = (err, code, signal) => {
    if (done) return;
    done = true;
    if (child._overflow && !failure) {
      // The host cut the output at maxBuffer (exec).
      failure = new RangeError(`${child._overflow} maxBuffer length exceeded`);
      failure.code = 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER';
    }
    const all = (name) => {
      if (typeof out[name][0] === 'string' && size[name] <= maxBuffer) return out[name].join('');
      const bytes = out[name].map((d) => (typeof d === 'string' ? Buffer.from(encoder.encode(d)) : d));
      let b = Buffer.concat(bytes);
      if (b.length > maxBuffer) b = b.subarray(0, maxBuffer);
      return decode(b, encoding);
    };
    const stdout = all('stdout');
    const stderr = all('stderr');
    if (!err && failure) err = failure;
    else if (!err && (code !== 0 || signal !== null)) {
      err = new Error(`Command failed: ${cmd}\n${stderr}`);
      err.code = code;
      err.killed = child.killed;
      err.signal = signal;
      // As Node prints it: the message (the child's stderr with it), not
      // the engine's frames or the builder's temporary paths.
      err.stack = `Error: ${err.message}`;
    }
    if (err) {
      err.cmd = cmd;
      // As Node's: a failed call's output comes with its error (what
      // util.promisify(exec) rejects with).
      err.stdout = stdout;
      err.stderr = stderr;
    }
    if (callback) callback(err, stdout, stderr);
  };
  child.on('error', (e) => finish(e, null, null));
  child.on('close', (code, signal) => finish(null, code, signal));
}

function splitCallback(args, options, callback) {
  if (typeof args === 'function') return [[], {}, args];
  if (!Array.isArray(args)) [callback, options, args] = [options, args, []];
  if (typeof options === 'function') [callback, options] = [options, {}];
  return [args ?? [], options ?? {}, callback];
}

/** execFile(file[, args][, options][, callback]): no shell, buffered. */
export function execFile(file, args, options, callback) {
  [args, options, callback] = splitCallback(args, options, callback);
  const child = spawn(file, args, { ...options, stdio: 'pipe' });
  setEncoding(child, options.encoding);
  collect(child, [file, ...args.map(String)].join(' '), options, callback);
  return child;
}

/** `util.promisify(f)` of exec and execFile, as Node's: a promise of
 * `{ stdout, stderr }`, rejected with an error that carries both, with
 * the child as its `child`. */
// (The npm port of `util` has a symbol of its own; Node's is global.)
const PROMISIFY = [promisify.custom, Symbol.for('nodejs.util.promisify.custom')];
function promisified(f) {
  return (...args) => {
    let child;
    const promise = new Promise((resolve, reject) => {
      child = f(...args, (err, stdout, stderr) => (err ? reject(err) : resolve({ stdout, stderr })));
    });
    promise.child = child;
    return promise;
  };
}
for (const symbol of PROMISIFY) Object.defineProperty(execFile, symbol, { value: promisified(execFile) });

/** The shell of exec/execSync's `shell` option: a string names one the
 * host granted (`--allow-shell=SHELL`), else the host's first. */
const shellOf = (options) => (typeof options.shell === 'string' ? options.shell : undefined);

/** exec(command[, options][, callback]): through a shell the host
 * granted (`--allow-shell`; `options.shell` picks one of them). The WIT
 * `exec` blocks, so the command runs when the loop reaches it, one at a
 * time; what was written to stdin before then is its input. */
export function exec(command, options, callback) {
  if (typeof options === 'function') [callback, options] = [options, {}];
  options = { ...(options ?? {}) };
  const child = new ChildProcess();
  const sh = shellOf(options) ?? '/bin/sh';
  child.spawnfile = sh;
  child.spawnargs = [sh, '-c', command];
  child.stdin = new Writable();
  child.stdout = new Readable();
  child.stderr = new Readable();
  child.stdio = [child.stdin, child.stdout, child.stderr];
  setEncoding(child, options.encoding);
  collect(child, command, { ...options, encoding: options.encoding ?? 'utf8' }, callback);
  loop.setImmediate(() => {
    let out;
    try {
      out = wit.execShell(command, witExecOptions(options, Buffer.concat(child.stdin.queue.map(([b]) => b))));
    } catch (e) {
      child._exited = true;
      child._closed = true;
      child.emit('error', systemError(e, `spawn ${sh}`, sh, child.spawnargs.slice(1)));
      return;
    }
    child.pid = out.pid;
    // The host killed the child on timeout or overflow, as Node would.
    child.killed = out.timedOut || out.stdoutTruncated || out.stderrTruncated;
    if (out.stdoutTruncated || out.stderrTruncated) child._overflow = out.stdoutTruncated ? 'stdout' : 'stderr';
    child.emit('spawn');
    if (out.stdout.length) child.stdout._push(out.stdout);
    if (out.stderr.length) child.stderr._push(out.stderr);
    child.stdout._end();
    child.stderr._end();
    child._onExit(out); // 'exit', then 'close' (no stream is left open)
  });
  return child;
}
for (const symbol of PROMISIFY) Object.defineProperty(exec, symbol, { value: promisified(exec) });

function witExecOptions(options, input) {
  return {
    cwd: options.cwd,
    env: envPairs(options.env),
    timeoutMs: options.timeout > 0 ? options.timeout : undefined,
    killSignal: signalNumber(options.killSignal, 'SIGTERM'),
    maxBuffer: Number.isFinite(options.maxBuffer) ? options.maxBuffer : undefined,
    input: input && input.length ? input : undefined,
    uid: options.uid,
    gid: options.gid,
    shell: shellOf(options),
  };
}

/** Runs a command to completion (the WIT `exec`/`exec-file`) as
 * spawnSync reports it. */
function runSync(run, file, args, options) {
  const input = options.input === undefined ? undefined : toBytes(options.input, 'utf8');
  const result = { pid: 0, output: null, stdout: null, stderr: null, status: null, signal: null, error: undefined };
  let out;
  try {
    out = run(witExecOptions(options, input));
  } catch (e) {
    result.error = systemError(e, `spawnSync ${file}`, file, args);
    return result;
  }
  const enc = options.encoding;
  result.pid = out.pid;
  result.stdout = decode(Buffer.from(out.stdout), enc);
  result.stderr = decode(Buffer.from(out.stderr), enc);
  result.output = [null, result.stdout, result.stderr];
  result.status = out.code;
  result.signal = signalName(out.signal);
  if (out.timedOut) {
    result.error = systemError(new wit.WitError('timed-out', 'the timeout expired'), `spawnSync ${file}`, file, args);
  } else if (out.stdoutTruncated || out.stderrTruncated) {
    result.error = new RangeError('stdout maxBuffer length exceeded');
    result.error.code = 'ENOBUFS';
  }
  return result;
}

/** spawnSync(command[, args][, options]). */
export function spawnSync(command, args, options) {
  [args, options] = normalizeArgs(args, options);
  const result = runSync((o) => wit.execFile(command, args, o), command, args, options);
  // The host buffers the output: what is 'inherit'ed is written now.
  const stdio = stdioOf(options);
  if (stdio[1] === 'inherit' && result.stdout && result.stdout.length) process.stdout.write(result.stdout);
  if (stdio[2] === 'inherit' && result.stderr && result.stderr.length) process.stderr.write(result.stderr);
  return result;
}

/** What execSync/execFileSync do with a result: stderr to ours unless
 * stdio is given; throw on failure; return stdout. */
function finishSync(result, cmd, options) {
  const stdio = options.stdio === undefined ? ['pipe', 'pipe', 'inherit'] : stdioOf(options);
  const enc = options.encoding;
  if (stdio[2] === 'inherit' && result.stderr && result.stderr.length) process.stderr.write(result.stderr);
  if (stdio[1] === 'inherit' && result.stdout && result.stdout.length) process.stdout.write(result.stdout);
  if (result.error || result.status !== 0) {
    const err = result.error ?? new Error(`Command failed: ${cmd}\n${result.stderr ? result.stderr.toString() : ''}`);
    Object.assign(err, { status: result.status, signal: result.signal, output: result.output, pid: result.pid, stdout: result.stdout, stderr: result.stderr });
    throw err;
  }
  return enc && enc !== 'buffer' ? result.stdout : Buffer.isBuffer(result.stdout) ? result.stdout : Buffer.from(result.stdout);
}

/** execSync(command[, options]): through a granted shell (as exec). */
export function execSync(command, options) {
  options = { ...(options ?? {}) };
  const sh = shellOf(options) ?? '/bin/sh';
  const result = runSync((o) => wit.execShell(command, o), sh, ['-c', command], options);
  return finishSync(result, command, options);
}

/** execFileSync(file[, args][, options]). */
export function execFileSync(file, args, options) {
  [args, options] = normalizeArgs(args, options);
  const result = runSync((o) => wit.execFile(file, args, o), file, args, options);
  return finishSync(result, [file, ...args].join(' '), options);
}

/** The component to fork for `modulePath`: `x.js` (also .cjs, .mjs) is
 * the component `x.wasm` built from it; any other name is used as it is.
 * A relative path (`./x.js`, `lib/x.js`, a `path.join(__dirname, …)`)
 * names the granted component by its file name, as the host matches a
 * name without `/` (its grants' names are unique); an absolute one must
 * be the grant's own path. */
export function componentFor(modulePath) {
  const component = String(modulePath).replace(/\.(c|m)?js$/, '.wasm');
  return component.startsWith('/') ? component : component.split('/').pop();
}

/** fork(modulePath[, args][, options]): the component built from
 * modulePath (see componentFor) in a worker process. options: env, silent,
 * stdio, and `wasmproc` for what the worker may do: { programs, dirs:
 * [{ path, readOnly }], allowEnv, shell, forks, limits, uid, gid } (nothing
 * by default: capabilities only narrow) and where it runs: { placement:
 * 'local' | 'cluster' | { labels } }. */
export function fork(modulePath, args, options) {
  [args, options] = normalizeArgs(args, options);
  const child = new ChildProcess();
  const component = componentFor(modulePath);
  child.spawnfile = component;
  child.spawnargs = [component, ...args];
  const stdio = options.silent ? ['pipe', 'pipe', 'pipe'] : stdioOf({ stdio: options.stdio ?? 'inherit' });
  let worker;
  try {
    worker = wit.fork(component, args, {
      ...(options.wasmproc ?? {}),
      env: envPairs(options.env),
      stdout: stdio[1],
      stderr: stdio[2],
    });
  } catch (e) {
    // As in Node, the piped streams exist even when the worker did not
    // start (they end at once); the failure is an 'error' event.
    if (stdio[1] === 'pipe') child.stdout = new Readable();
    if (stdio[2] === 'pipe') child.stderr = new Readable();
    child.stdio = [null, child.stdout ?? null, child.stderr ?? null];
    child._failed(systemError(e, `fork ${component}`, component, args));
    return child;
  }
  child._handle = worker;
  child.pid = worker.pid;
  child.connected = true;
  for (const name of ['stdout', 'stderr']) {
    if (!worker[name]) continue;
    const r = new Readable();
    child[name] = r;
    child._open += 1;
    readSource(r, worker[name], () => child._streamClosed());
  }
  child.stdio = [null, child.stdout, child.stderr];
  // The channel counts as open until the worker closes it.
  child._open += 1;
  const channel = {
    pollables() {
      return [[worker.subscribe(), () => this.receive()]];
    },
    receive() {
      while (!this.done) {
        const bytes = worker.tryReceive();
        if (bytes === undefined) return;
        if (bytes === null) {
          this.closed();
          return;
        }
        child.emit('message', JSON.parse(Buffer.from(bytes).toString('utf8')));
      }
    },
    closed() {
      if (this.done) return;
      this.done = true;
      loop.remove(channel);
      child.connected = false;
      child.emit('disconnect');
      child._streamClosed();
    },
  };
  loop.add(channel);
  child.send = (message, handle, opts, callback) => {
    callback = [handle, opts, callback].find((x) => typeof x === 'function');
    if (!child.connected) {
      const err = new Error('Channel closed');
      err.code = 'ERR_IPC_CHANNEL_CLOSED';
      loop.setImmediate(() => (callback ? callback(err) : child.emit('error', err)));
      return false;
    }
    try {
      worker.send(Buffer.from(JSON.stringify(message), 'utf8'));
    } catch (e) {
      const err = systemError(e, 'send');
      loop.setImmediate(() => (callback ? callback(err) : child.emit('error', err)));
      return false;
    }
    if (callback) loop.setImmediate(() => callback(null));
    return true;
  };
  // What was sent is still delivered, then the worker's channel ends
  // (its 'disconnect'); it keeps running. As in Node, `connected` is false
  // at once and 'disconnect' comes on the next tick.
  child.disconnect = () => {
    if (!child.connected) return;
    child.connected = false;
    worker.closeChannel();
    process.nextTick(() => channel.closed());
  };
  exitSource(child, worker);
  const onExit = child._onExit.bind(child);
  child._onExit = (status) => {
    channel.receive(); // messages sent before the exit come first
    onExit(status);
  };
  loop.setImmediate(() => child.emit('spawn'));
  return child;
}

export default { ChildProcess, exec, execFile, execFileSync, execSync, fork, spawn, spawnSync };
