// The event loop of a wasmproc JavaScript guest.
//
// Why: a wasi:cli command's `run` is one call into the guest; StarlingMonkey
// (the engine under componentize-js) keeps running microtasks and its own
// timers while the promise `run` returns is pending, but it cannot wait on
// the pollables of children, worker channels and streams. This loop does:
// each turn it lets the engine drain its microtasks, runs due timers, then
// blocks in one wasi `poll` over every pollable a live source asks for (and
// the next timer), and calls the handlers of the ready ones. It returns
// when no source and no timer is left, as Node's loop does.
//
// A source is an object with `pollables()`, returning [pollable, handler]
// pairs for what it waits on now (pollables are dropped after each poll).

import { pollAndDrop, sleepPollable, nowMs } from './_bindings.js';

const sources = new Set();
let timers = [];
let nextTimerId = 1;
// The engine's own setTimeout, to yield to it (see `run`).
const engineSetTimeout = globalThis.setTimeout;

/** Keeps the loop alive while `source` is registered. */
export function add(source) {
  sources.add(source);
}

export function remove(source) {
  sources.delete(source);
}

/** A timer, as Node's Timeout: ref/unref, and its id when used as a number. */
class Timeout {
  constructor(fn, ms, args, repeat) {
    this.id = nextTimerId++;
    this.fn = fn;
    this.args = args;
    this.ms = Math.max(1, Number(ms) || 0); // Node's least delay
    this.repeat = repeat;
    this.at = nowMs() + this.ms;
    this.refed = true;
  }
  ref() {
    this.refed = true;
    return this;
  }
  unref() {
    this.refed = false;
    return this;
  }
  hasRef() {
    return this.refed;
  }
  [Symbol.toPrimitive]() {
    return this.id;
  }
}

function addTimer(fn, ms, args, repeat) {
  if (typeof fn !== 'function') throw new TypeError('The "callback" argument must be of type function');
  const t = new Timeout(fn, ms, args, repeat);
  timers.push(t);
  return t;
}

function clear(t) {
  if (t === undefined || t === null) return;
  const id = typeof t === 'object' ? t.id : Number(t);
  timers = timers.filter((x) => x.id !== id);
}

export const setTimeout = (fn, ms, ...args) => addTimer(fn, ms, args, false);
export const setInterval = (fn, ms, ...args) => addTimer(fn, ms, args, true);
/** Runs `fn` on the next turn, before timers that are due later. */
export const setImmediate = (fn, ...args) => {
  const t = addTimer(fn, 0, args, false);
  t.at = 0;
  return t;
};
export const clearTimeout = clear;
export const clearInterval = clear;
export const clearImmediate = clear;

/** Lets the engine run every pending microtask (promise reactions). */
function drainMicrotasks() {
  return new Promise((resolve) => engineSetTimeout(resolve, 0));
}

function runDueTimers() {
  const now = nowMs();
  const due = timers.filter((t) => t.at <= now).sort((a, b) => a.at - b.at || a.id - b.id);
  for (const t of due) {
    if (!timers.includes(t)) continue; // cleared by an earlier one
    if (t.repeat) t.at = now + t.ms;
    else clear(t);
    t.fn(...t.args);
  }
  return due.length > 0;
}

/** Runs the loop until nothing is left; `onError(e)` gets an exception
 * thrown by a callback and returns whether to go on. */
export async function run(onError) {
  for (;;) {
    await drainMicrotasks();
    try {
      if (runDueTimers()) continue;
      const waits = [];
      for (const s of [...sources]) waits.push(...s.pollables());
      const live = timers.filter((t) => t.refed);
      // Nothing to wait for (a source waiting on nothing could never wake).
      if (waits.length === 0 && live.length === 0) return;
      const pollables = waits.map(([p]) => p);
      if (timers.length > 0) {
        const next = Math.min(...timers.map((t) => t.at));
        pollables.push(sleepPollable(next - nowMs()));
      }
      for (const i of pollAndDrop(pollables)) {
        if (i < waits.length) waits[i][1]();
      }
    } catch (e) {
      if (!onError(e)) return;
    }
  }
}
