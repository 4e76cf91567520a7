"""hello -- the trivial guest of benches/compare.rs's start-up rows, in
Python (the Rust one is guest-examples/hello): prints `hello` and exits 0.

Built with componentize-py for the world wasi:cli/command (the `world:` line
below, read by scripts/build-guests.sh), so it imports no wasmproc:process
interface and the bench can run it on a plain wasmtime-wasi host too.

world: wasi:cli/command@0.2.12
"""

from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        print("hello")
