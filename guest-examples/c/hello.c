/*
 * hello -- the trivial guest of benches/compare.rs's start-up rows, in C
 * (the Rust one is guest-examples/hello): prints `hello` and exits 0. It
 * calls no wasmproc:process function, so its component imports only WASI
 * and the bench can run it on a plain wasmtime-wasi host too.
 */
#include <stdio.h>

int main(void) {
    puts("hello");
    return 0;
}
