//! The trivial guest of `benches/compare.rs`'s start-up rows: prints
//! `hello` and exits 0, so that a run measures instantiate → `main` → exit
//! and nothing else. It imports no `wasmproc:process` interface, so the
//! bench can run the same component on a plain wasmtime-wasi host too.
//! The same guest in C, Python and JavaScript: `c/hello.c`,
//! `python/hello.py`, `js/hello.js`.

fn main() {
    println!("hello");
}
