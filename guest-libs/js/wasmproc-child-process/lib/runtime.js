// What the build command (bin/componentize-node.js) wraps around a Node
// script: Node's globals (process, console, Buffer, timers, require of
// child_process), the script's top-level code run inside wasi:cli `run`
// (not while the component is being built), then the event loop until
// nothing is left, and the exit code (process.exitCode, or 1 after an
// uncaught exception, as Node).

import { Buffer } from 'buffer';
import './fast_text.js';
import { format } from 'util';
import * as loop from './loop.js';
import { exit } from './_bindings.js';
import { process, start, becomeWorker } from './process.js';

function install() {
  const g = globalThis;
  g.process = process;
  g.Buffer = Buffer;
  g.global = g;
  for (const name of ['setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'clearImmediate']) {
    g[name] = loop[name];
  }
  const out = (stream) => (...args) => stream.write(format(...args) + '\n');
  g.console = {
    ...g.console,
    log: out(process.stdout),
    info: out(process.stdout),
    debug: out(process.stdout),
    error: out(process.stderr),
    warn: out(process.stderr),
    trace: out(process.stderr),
  };
}

function uncaught(e) {
  if (process.listenerCount('uncaughtException') > 0) {
    process.emit('uncaughtException', e);
    return true;
  }
  process.stderr.write(`Uncaught ${e && e.stack ? `${e}\n${e.stack}` : format(e)}\n`);
  process.exitCode = 1;
  return false;
}

/** Runs `main` (which requires the script) and then the loop; returns the
 * promise wasi:cli `run` hands to the engine. `parent`: the worker
 * bindings, for a forked worker. */
export async function main(scriptPath, requireScript, parent) {
  install();
  start(scriptPath);
  if (parent) becomeWorker(parent);
  let ok = true;
  try {
    requireScript();
  } catch (e) {
    ok = uncaught(e);
  }
  if (ok) await loop.run(uncaught);
  const code = Number(process.exitCode ?? 0);
  process.emit('exit', code);
  if (code !== 0) exit(code);
}
