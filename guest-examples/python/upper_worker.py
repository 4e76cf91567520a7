"""upper_worker NAME: a forked worker (built for world
wasmproc:process/worker-command) that answers each message `{"text": T}`
from its parent with `{"worker": NAME, "upper": T.upper()}`, until the
message `null` or the parent closes the channel. Forked by fork_demo.py.
"""

# wasmproc: worker
import sys

from componentize_py_types import Err
from wasmproc_subprocess import parent
from wit_world import exports
from wit_world.imports import environment


def main(argv):
    name = argv[1] if len(argv) > 1 else "?"
    for message in parent:
        if message is None:
            break
        parent.send({"worker": name, "upper": message["text"].upper()})
    sys.stdout.write(f"worker {name} done\n")  # one write: the parent's lines are not split
    sys.stdout.flush()
    return 0


class Run(exports.Run):
    def run(self) -> None:
        if main(environment.get_arguments()):
            raise Err(None)
        sys.stdout.flush()
