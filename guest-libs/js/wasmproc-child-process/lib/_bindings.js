// The only module that calls the raw wasmproc:process bindings (and the few
// wasi imports the library needs). Everything above it sees plain values:
// numbers instead of bigints, `{ code, signal }` instead of the WIT
// `exit-status` variant, a `WitError` instead of a thrown error-code value,
// and small wrappers over streams and resources.
//
// Why one module: the interface names, record fields and variant shapes of
// the WIT package (wasmproc:process@0.2.0) are written here only, so that a
// new version changes this file (and _bindings_worker.js) and nothing else.
// The worker side (`parent`) is in _bindings_worker.js: only a worker's
// world imports it.

import * as execApi from 'wasmproc:process/exec@0.2.0';
import * as spawnApi from 'wasmproc:process/spawn@0.2.0';
import * as forkApi from 'wasmproc:process/fork@0.2.0';
import { poll as witPoll } from 'wasi:io/poll@0.2.12';
import { now, subscribeDuration } from 'wasi:clocks/monotonic-clock@0.2.12';
import { getArguments, getEnvironment } from 'wasi:cli/environment@0.2.12';
import { exitWithCode } from 'wasi:cli/exit@0.2.12';
import { getStdout } from 'wasi:cli/stdout@0.2.12';
import { getStderr } from 'wasi:cli/stderr@0.2.12';

/** A failed wasmproc call: `kind` is the WIT error-code case name
 * (`access-denied`, `not-found`, ...), `message` the host's text. */
export class WitError extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.kind = kind;
    this.detail = message;
  }
}

function witError(e) {
  const p = e && typeof e === 'object' && 'payload' in e ? e.payload : undefined;
  if (p && typeof p === 'object' && typeof p.tag === 'string') {
    return new WitError(p.tag, p.val ?? p.tag);
  }
  return e;
}

function call(f) {
  try {
    return f();
  } catch (e) {
    throw witError(e);
  }
}

function drop(resource) {
  if (resource) resource[Symbol.dispose]();
}

/** `{ code, signal }` (one of them null) from an `exit-status`. */
function exitStatus(status) {
  return status.tag === 'exited'
    ? { code: status.val, signal: null }
    : { code: null, signal: status.val };
}

/** `{ code, signal, timedOut, trap }` from a `termination`: `timedOut`
 * when the spawn deadline killed the child, `trap` the message of a
 * worker whose guest trapped (its code is then 134), else undefined. */
function termination(t) {
  return { ...exitStatus(t.status), timedOut: t.timedOut, trap: t.trap };
}

function execOptions(o) {
  return {
    cwd: o.cwd,
    env: o.env ?? [],
    timeoutMs: o.timeoutMs === undefined ? undefined : BigInt(o.timeoutMs),
    killSignal: o.killSignal,
    maxBuffer: o.maxBuffer === undefined ? undefined : BigInt(o.maxBuffer),
    stdin: o.input,
    uid: o.uid,
    gid: o.gid,
    shell: o.shell,
  };
}

function execOutput(out) {
  return {
    pid: out.pid,
    ...exitStatus(out.status),
    stdout: out.stdout,
    stderr: out.stderr,
    stdoutTruncated: out.stdoutTruncated,
    stderrTruncated: out.stderrTruncated,
    timedOut: out.timedOut,
  };
}

/** Runs `command` through a shell the host granted (`o.shell`, else the
 * first), to completion. `o`: { cwd, env: [[name, value]], timeoutMs,
 * killSignal (number), maxBuffer, input (Uint8Array), uid, gid, shell }. Returns { pid, code, signal,
 * stdout, stderr, stdoutTruncated, stderrTruncated, timedOut }. */
export function execShell(command, o) {
  return call(() => execOutput(execApi.exec(command, execOptions(o))));
}

/** Runs `program` with `args` without a shell, to completion; as execShell. */
export function execFile(program, args, o) {
  return call(() => execOutput(execApi.execFile(program, args, execOptions(o))));
}

/** A readable wasi:io input-stream. */
export class InStream {
  constructor(stream) {
    this.stream = stream;
  }
  subscribe() {
    return this.stream.subscribe();
  }
  /** Up to `n` bytes (possibly none yet), or null at the end. */
  read(n) {
    try {
      return this.stream.read(BigInt(n));
    } catch (e) {
      // A wasi:io stream-error: `closed` is the end of the stream.
      if (e && e.payload && e.payload.tag === 'closed') return null;
      throw e;
    }
  }
  /** Blocks until some bytes or the end; null at the end. */
  blockingRead(n) {
    try {
      return this.stream.blockingRead(BigInt(n));
    } catch (e) {
      if (e && e.payload && e.payload.tag === 'closed') return null;
      throw e;
    }
  }
  close() {
    drop(this.stream);
    this.stream = undefined;
  }
}

/** A writable wasi:io output-stream. */
export class OutStream {
  constructor(stream) {
    this.stream = stream;
  }
  subscribe() {
    return this.stream.subscribe();
  }
  /** How many bytes `write` takes now (0: wait for `subscribe`). */
  checkWrite() {
    return Number(this.stream.checkWrite());
  }
  write(bytes) {
    this.stream.write(bytes);
  }
  /** Writes all of `bytes`, blocking. */
  writeAll(bytes) {
    for (let i = 0; i < bytes.length; i += 4096) {
      this.stream.blockingWriteAndFlush(bytes.subarray(i, i + 4096));
    }
  }
  flush() {
    this.stream.flush();
  }
  close() {
    drop(this.stream);
    this.stream = undefined;
  }
}

const STDIO = { pipe: 'piped', inherit: 'inherit', ignore: 'null' };
/** The WIT `stdio` variant for 'pipe' | 'inherit' | 'ignore'. */
const stdio = (s) => ({ tag: STDIO[s] });

/** A spawned child. `stdio`: 'pipe' | 'inherit' | 'ignore' each. */
export class Child {
  constructor(child) {
    this.child = child;
    this.pid = child.pid();
    const take = (s, Wrap) => (s === undefined ? undefined : new Wrap(s));
    this.stdin = take(child.takeStdin(), OutStream);
    this.stdout = take(child.takeStdout(), InStream);
    this.stderr = take(child.takeStderr(), InStream);
  }
  /** A pollable ready once the child has exited. */
  subscribeExit() {
    return this.child.subscribe();
  }
  /** `{ code, signal, timedOut, trap }` once exited, else undefined. */
  tryWait() {
    return call(() => {
      const t = this.child.tryWait();
      return t === undefined ? undefined : termination(t);
    });
  }
  wait() {
    return call(() => termination(this.child.wait()));
  }
  kill(signal) {
    call(() => this.child.kill(signal));
  }
  /** Drops the child (killing its process group if it still runs); its
   * streams, if not closed, stay readable. */
  close() {
    drop(this.child);
    this.child = undefined;
  }
}

/** Starts `program`; `o`: { cwd, env, stdin, stdout, stderr, uid, gid,
 * timeoutMs, killSignal (number) }: the host kills the child's group
 * `timeoutMs` after the start (killSignal, then SIGKILL). */
export function spawn(program, args, o) {
  return call(
    () =>
      new Child(
        spawnApi.spawn(program, args, {
          cwd: o.cwd,
          env: o.env ?? [],
          stdin: stdio(o.stdin),
          stdout: stdio(o.stdout),
          stderr: stdio(o.stderr),
          uid: o.uid,
          gid: o.gid,
          timeoutMs: o.timeoutMs === undefined ? undefined : BigInt(o.timeoutMs),
          killSignal: o.killSignal,
        }),
      ),
  );
}

/** A forked worker and its message channel. */
export class Worker {
  constructor(worker) {
    this.worker = worker;
    this.pid = worker.pid();
    const out = worker.takeStdout();
    const err = worker.takeStderr();
    this.stdout = out === undefined ? undefined : new InStream(out);
    this.stderr = err === undefined ? undefined : new InStream(err);
  }
  send(bytes) {
    call(() => this.worker.send(bytes));
  }
  /** The next message, undefined if none is ready, null once closed. */
  tryReceive() {
    try {
      return this.worker.tryReceive();
    } catch (e) {
      const err = witError(e);
      if (err instanceof WitError && err.kind === 'closed') return null;
      throw err;
    }
  }
  /** A pollable ready when a message (or the end) can be received. */
  subscribe() {
    return this.worker.subscribe();
  }
  /** Closes the channel (Node's disconnect): what was sent is still
   * delivered, then the worker's receive says closed; it keeps running. */
  closeChannel() {
    this.worker.closeChannel();
  }
  subscribeExit() {
    return this.worker.subscribeExit();
  }
  tryWait() {
    return call(() => {
      const t = this.worker.tryWait();
      return t === undefined ? undefined : termination(t);
    });
  }
  kill(signal) {
    call(() => this.worker.kill(signal));
  }
  close() {
    drop(this.worker);
    this.worker = undefined;
  }
}

/** Forks `component`. `o`: { env, stdout, stderr ('pipe' | 'inherit' |
 * 'ignore'), programs, dirs: [{ path, readOnly }], allowEnv, shell, forks
 * (components it may fork in turn), limits: { maxLiveChildren, ... }, uid,
 * gid, placement ('local' (default) | 'cluster' | { labels: [...] }) }. */
export function fork(component, args, o) {
  const big = (v) => (v === undefined ? undefined : BigInt(v));
  const l = o.limits ?? {};
  return call(
    () =>
      new Worker(
        forkApi.fork(component, args, {
          programs: o.programs ?? [],
          dirs: (o.dirs ?? []).map((d) => ({ path: d.path, readOnly: !!d.readOnly })),
          allowEnv: o.allowEnv ?? [],
          env: o.env ?? [],
          shell: !!o.shell,
          forks: o.forks ?? [],
          stdout: stdio(o.stdout),
          stderr: stdio(o.stderr),
          limits: {
            maxLiveChildren: l.maxLiveChildren,
            maxTotalSpawns: big(l.maxTotalSpawns),
            maxBuffer: big(l.maxBuffer),
            maxTimeoutMs: big(l.maxTimeoutMs),
            cpuSeconds: big(l.cpuSeconds),
            addressSpace: big(l.addressSpace),
            openFiles: big(l.openFiles),
            processes: big(l.processes),
            fileSize: big(l.fileSize),
          },
          uid: o.uid,
          gid: o.gid,
          placement: placement(o.placement),
        }),
      ),
  );
}

function placement(p) {
  if (p === undefined || p === 'local') return { tag: 'local' };
  if (p === 'cluster') return { tag: 'cluster' };
  if (p && Array.isArray(p.labels)) return { tag: 'labels', val: p.labels.map(String) };
  throw new TypeError(`placement ${JSON.stringify(p)}: use 'local', 'cluster' or { labels: [...] }`);
}

/** Blocks until one of `pollables` is ready; returns the ready indexes,
 * and drops the pollables. */
export function pollAndDrop(pollables) {
  const ready = witPoll(pollables);
  for (const p of pollables) drop(p);
  return Array.from(ready);
}

/** Milliseconds on the monotonic clock. */
export function nowMs() {
  return Number(now() / 1000000n);
}

/** A pollable ready after `ms` milliseconds. */
export function sleepPollable(ms) {
  return subscribeDuration(BigInt(Math.max(0, Math.ceil(ms))) * 1000000n);
}

export const args = () => getArguments();
export const environment = () => getEnvironment();
export const exit = (code) => exitWithCode(code & 0xff);

let stdoutStream;
let stderrStream;
/** The guest's own stdout and stderr (OutStream), opened once. */
export function stdout() {
  return (stdoutStream ??= new OutStream(getStdout()));
}
export function stderr() {
  return (stderrStream ??= new OutStream(getStderr()));
}
