// Node-style errors for wasmproc's error-codes. Why: Node programs check
// `error.code` against errno names (`ENOENT`, `EACCES`); each WIT error-code
// maps to the errno a Node program would see for the same failure (a
// program, component, shell or working directory that was not granted is
// ENOENT: outside its grants nothing exists for a guest), and the error
// keeps the host's message and the WIT case (`error.wasmproc`).

import { WitError } from './_bindings.js';

/** WIT error-code case -> [errno name, errno number]. */
export const ERRNO = {
  'access-denied': ['EACCES', -13], // a policy denial
  'not-found': ['ENOENT', -2],
  'invalid-argument': ['EINVAL', -22],
  'limit-exceeded': ['EAGAIN', -11],
  'timed-out': ['ETIMEDOUT', -110],
  closed: ['EPIPE', -32],
  unsupported: ['ENOSYS', -38],
  io: ['EIO', -5],
};

/** Whether a denial is of a program, component or working directory that
 * was not granted: outside its grants nothing exists for a guest (the
 * sandbox shows no path outside them either), so Node programs, which
 * test for ENOENT, get that, with the host's message naming the grant. */
const NOT_GRANTED =
  /^((program|component|shell) `[^`]*` is not (allowed|granted)|no shell is granted|working directory `[^`]*` is outside)/;
const notGranted = (e) => e.kind === 'access-denied' && NOT_GRANTED.test(e.detail);

/** A Node system error for `syscall` (`spawn node`) from a WitError; any
 * other exception is returned as it is. `spawnargs` are the arguments
 * after the command, as Node's error has them. */
export function systemError(e, syscall, path, spawnargs) {
  if (!(e instanceof WitError)) return e;
  const [code, errno] = notGranted(e) ? ['ENOENT', -2] : ERRNO[e.kind] ?? ['EIO', -5];
  const err = new Error(`${syscall} ${code} (wasmproc ${e.kind}: ${e.detail})`);
  err.errno = errno;
  err.code = code;
  err.syscall = syscall;
  if (path !== undefined) err.path = path;
  if (spawnargs !== undefined) err.spawnargs = spawnargs;
  err.wasmproc = { code: e.kind, message: e.detail };
  return err;
}
