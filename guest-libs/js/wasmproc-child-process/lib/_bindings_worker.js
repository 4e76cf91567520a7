// The raw `wasmproc:process/parent` calls of a forked worker (world
// worker-command), apart from _bindings.js because only a worker's world
// imports this interface: a command built with it would not link.

import {
  send as witSend,
  tryReceive as witTryReceive,
  subscribe as witSubscribe,
  close as witClose,
} from 'wasmproc:process/parent@0.2.0';
import { WitError } from './_bindings.js';

/** Sends one message (bytes) to the parent; blocks while its queue is full. */
export function send(bytes) {
  try {
    witSend(bytes);
  } catch (e) {
    const p = e && e.payload;
    throw p && p.tag ? new WitError(p.tag, p.val ?? p.tag) : e;
  }
}

/** The next message, undefined if none is ready, null once the parent has
 * closed the channel or exited. */
export function tryReceive() {
  try {
    return witTryReceive();
  } catch (e) {
    const p = e && e.payload;
    if (p && p.tag === 'closed') return null;
    throw p && p.tag ? new WitError(p.tag, p.val ?? p.tag) : e;
  }
}

/** A pollable ready when a message (or the end) can be received. */
export const subscribe = () => witSubscribe();

/** Closes the channel (Node's process.disconnect()): what was sent is
 * still delivered, then the parent's receive says closed. */
export const close = () => witClose();
