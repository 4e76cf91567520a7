// The `process` global of a wasmproc JavaScript guest: argv, env, exit,
// exitCode, stdout/stderr, nextTick, and for a forked worker send,
// on('message'), connected and disconnect. Why not a polyfill package:
// every member here is a wasi or wasmproc call (through _bindings.js), and
// the worker channel must be a source of the guest's event loop.

import { EventEmitter } from 'events';
import { Buffer } from 'buffer';
import * as wit from './_bindings.js';
import * as loop from './loop.js';

/** process.stdout / process.stderr: write(string | bytes). */
class Output extends EventEmitter {
  constructor(stream, fd) {
    super();
    this.stream = stream;
    this.fd = fd;
    this.isTTY = false;
  }
  write(chunk, encoding, callback) {
    if (typeof encoding === 'function') [callback, encoding] = [encoding, undefined];
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, encoding || 'utf8') : chunk;
    this.stream().writeAll(bytes);
    if (callback) loop.setImmediate(callback);
    return true;
  }
  end(chunk) {
    if (chunk !== undefined) this.write(chunk);
  }
}

class Process extends EventEmitter {
  constructor() {
    super();
    this.argv = [];
    this.argv0 = 'node';
    this.execArgv = [];
    this.execPath = '/wasmproc';
    this.env = {};
    this.exitCode = undefined;
    this.platform = 'wasi';
    this.pid = 0;
    this.version = 'v20.0.0-wasmproc';
    this.versions = {};
    this.stdout = new Output(wit.stdout, 1);
    this.stderr = new Output(wit.stderr, 2);
  }
  /** Ends the guest now (after 'exit' listeners), as Node's does. */
  exit(code) {
    if (code !== undefined) this.exitCode = code;
    code = Number(this.exitCode ?? 0);
    this.emit('exit', code);
    wit.exit(code);
  }
  nextTick(fn, ...args) {
    queueMicrotask(() => fn(...args));
  }
  cwd() {
    return this.env.PWD ?? '/';
  }
  hrtime() {
    const ms = wit.nowMs();
    return [Math.floor(ms / 1000), (ms % 1000) * 1e6];
  }
  uptime() {
    return wit.nowMs() / 1000;
  }
}

export const process = new Process();

/** Fills in what is only known at run time: called first thing in `run`. */
export function start(scriptPath) {
  const args = wit.args();
  process.argv = [process.execPath, scriptPath ?? args[0] ?? 'main.js', ...args.slice(1)];
  process.env = Object.fromEntries(wit.environment());
}

/** Makes `process` a worker's: send, on('message'), connected, disconnect.
 * `parent` is _bindings_worker.js. */
export function becomeWorker(parent) {
  process.connected = true;
  const channel = {
    pollables() {
      return [[parent.subscribe(), () => this.receive()]];
    },
    receive() {
      for (;;) {
        const bytes = parent.tryReceive();
        if (bytes === undefined) return;
        if (bytes === null) {
          process.disconnect();
          return;
        }
        process.emit('message', JSON.parse(Buffer.from(bytes).toString('utf8')));
      }
    },
  };
  // Listening for messages keeps the worker alive, as in Node.
  process.on('newListener', (event) => {
    if (event === 'message' && process.connected) loop.add(channel);
  });
  process.on('removeListener', (event) => {
    if (event === 'message' && process.listenerCount('message') === 0) loop.remove(channel);
  });
  process.send = (message, handle, options, callback) => {
    callback = [handle, options, callback].find((x) => typeof x === 'function');
    if (!process.connected) {
      const err = new Error('Channel closed');
      err.code = 'ERR_IPC_CHANNEL_CLOSED';
      loop.setImmediate(() => (callback ? callback(err) : process.emit('error', err)));
      return false;
    }
    parent.send(Buffer.from(JSON.stringify(message), 'utf8'));
    if (callback) loop.setImmediate(() => callback(null));
    return true;
  };
  // What was sent is still delivered, then the parent's channel ends (its
  // 'disconnect'); this worker keeps running. As in Node, `connected` is
  // false at once and 'disconnect' comes on the next tick.
  process.disconnect = () => {
    if (!process.connected) return;
    process.connected = false;
    parent.close();
    loop.remove(channel);
    process.nextTick(() => process.emit('disconnect'));
  };
}
