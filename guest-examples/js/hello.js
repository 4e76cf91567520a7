// hello -- the trivial guest of benches/compare.rs's start-up rows, in
// JavaScript (the Rust one is guest-examples/hello): prints `hello` and
// exits 0.
//
// Built with componentize-js for the world wasi:cli/command (the `world:`
// line below, read by scripts/build-guests.sh), so it imports no
// wasmproc:process interface and the bench can run it on a plain
// wasmtime-wasi host too.
//
// world: wasi:cli/command@0.2.12

import { getStdout } from 'wasi:cli/stdout@0.2.12';

export const run = {
  run() {
    getStdout().blockingWriteAndFlush(new TextEncoder().encode('hello\n'));
  },
};
