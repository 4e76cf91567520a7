"""fork_demo PY_WORKER JS_WORKER TRAP_WORKER: forked workers through wasmproc_subprocess.

Forks two Python workers (upper_worker.py built as PY_WORKER), sends each a
few messages and reads the answers, iterating over the messages of one
(ended by a `null` message) and closing the channel of the other; then forks a JavaScript worker (guest-examples/node/support.js built as
JS_WORKER), which answers the JSON message it gets, as Node's
child_process.fork workers do; then forks TRAP_WORKER (the Rust
echo-worker, `then trap`), whose guest traps. Prints what it sees, in order.
"""

import sys

import wasmproc_subprocess as subprocess
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import environment


def say(*parts):
    # One write per line: the workers write to the same stdout, and a line
    # written in pieces could be split by theirs.
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def main(argv):
    py_worker, js_worker, trap_worker = argv[1], argv[2], argv[3]
    workers = [subprocess.fork(py_worker, [name]) for name in ("a", "b")]
    for i, worker in enumerate(workers):
        worker.send({"text": f"hello {i}"})
    for worker in workers:
        say("answer:", worker.receive())
    first, second = workers
    first.send({"text": "more"})
    first.send({"text": "and more"})
    first.send(None)
    for message in first:  # until the worker ends
        say("iterated:", message)
    say("first exited:", first.wait(timeout=60))
    try:
        second.wait(timeout=0.1)  # wait-timeout: it waits for a message
    except subprocess.TimeoutExpired as e:
        say("second still running after", e.timeout)
    second.close()  # close-channel: the worker's loop ends, it exits
    say("second after close:", second.receive(default="closed"))
    say("second exited:", second.wait())

    with subprocess.fork(js_worker, ["7"]) as js:
        js.send({"from": "python"})
        say("javascript answer:", list(js))
    say("javascript exited:", js.returncode)

    # A worker whose guest traps: its return code is 134, the host's exit
    # status for a trap (its messages, not JSON, are taken in unread).
    trapper = subprocess.fork(trap_worker, ["then", "trap"])
    say("trapped worker exited:", trapper.wait(timeout=60))

    try:
        subprocess.fork("not-granted.wasm")
    except FileNotFoundError as e:
        say("denied:", e.errno, e.wasmproc_code)
    return 0


class Run(exports.Run):
    def run(self) -> None:
        code = main(environment.get_arguments())
        sys.stdout.flush()
        if code:
            raise Err(None)
