"""fanout DIR K PROGRAM [ARGS...] -- the Python version of guest-examples/fanout
(same output, byte for byte).

Runs `PROGRAM ARGS... NAME` in DIR for every regular file NAME in DIR, at most
K at once, streaming each child's stdout as it arrives; then prints, sorted by
name,

    NAME: <the child's stdout, trimmed>   (" [exited N]" / " [signaled N]" if it failed)
    N files, at most M at once

If a child cannot be started: `error: <error-code>` (such as `access-denied`)
on stdout, the host's message on stderr, exit 1.

Built with componentize-py for the world wasmproc:process/command: a
wasi:cli command, so it exports wasi:cli/run (the `Run` class below).
"""

import os
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import environment, poll, spawn, streams
from wit_world.imports import wasmproc_process_types as types

# WIT case names of error-code, by the generated class.
ERROR_CODES = {
    types.ErrorCode_AccessDenied: "access-denied",
    types.ErrorCode_NotFound: "not-found",
    types.ErrorCode_InvalidArgument: "invalid-argument",
    types.ErrorCode_LimitExceeded: "limit-exceeded",
    types.ErrorCode_TimedOut: "timed-out",
    types.ErrorCode_Closed: "closed",
    types.ErrorCode_Unsupported: "unsupported",
    types.ErrorCode_Io: "io",
}


def code_and_message(error):
    """(`access-denied`, host message) of an error-code value."""
    return ERROR_CODES.get(type(error), "io"), error.value


class Job:
    def __init__(self, name, child):
        self.name = name
        self.child = child
        self.stdout = child.take_stdout()
        self.out = bytearray()
        self.status = None

    def close_stdout(self):
        # Resources are dropped explicitly: the stream before its child.
        self.stdout.__exit__(None, None, None)
        self.stdout = None


def fanout(argv):
    if len(argv) < 4:
        print("usage: fanout DIR K PROGRAM [ARGS...]", file=sys.stderr)
        return 1
    directory, program, extra = argv[1], argv[3], argv[4:]
    try:
        k = int(argv[2])
    except ValueError:
        k = 0
    if k <= 0:
        print("fanout: K must be a positive number", file=sys.stderr)
        return 1

    names = sorted(
        n for n in os.listdir(directory) if os.path.isfile(os.path.join(directory, n))
    )
    queue = list(reversed(names))
    running, done, most = [], [], 0
    while queue or running:
        while len(running) < k and queue:
            name = queue.pop()
            options = spawn.SpawnOptions(
                cwd=directory,
                env=[],
                stdin=types.Stdio_Null(),
                stdout=types.Stdio_Piped(),
                stderr=types.Stdio_Inherit(),
                uid=None,  # the host's child user and group
                gid=None,
                timeout_ms=None,  # no deadline
                kill_signal=None,
            )
            try:
                child = spawn.spawn(program, extra + [name], options)
            except Err as e:
                code, message = code_and_message(e.value)
                print(f"error: {code}")
                print(f"fanout: spawn {program}: {code}: {message}", file=sys.stderr)
                return 1
            running.append(Job(name, child))
        most = max(most, len(running))

        # One poll over every open stdout and every child not yet exited.
        sources, pollables = [], []
        for job in running:
            if job.stdout is not None:
                pollables.append(job.stdout.subscribe())
                sources.append((job, True))
            if job.status is None:
                pollables.append(job.child.subscribe())
                sources.append((job, False))
        ready = poll.poll(pollables)
        for p in pollables:
            p.__exit__(None, None, None)
        for index in ready:
            job, is_stdout = sources[index]
            if is_stdout:
                try:
                    job.out += job.stdout.read(65536)
                except Err:
                    job.close_stdout()
            else:
                ended = job.child.try_wait()  # a Termination, or None
                job.status = ended.status if ended is not None else None

        for job in [j for j in running if j.stdout is None and j.status is not None]:
            running.remove(job)
            job.child.__exit__(None, None, None)
            line = job.out.decode("utf-8", "replace").strip(" \t\n\r\f\v")
            if isinstance(job.status, types.ExitStatus_Exited) and job.status.value != 0:
                line += f" [exited {job.status.value}]"
            elif isinstance(job.status, types.ExitStatus_Signaled):
                line += f" [signaled {job.status.value}]"
            done.append((job.name, line))

    for name, line in sorted(done):
        print(f"{name}: {line}")
    print(f"{len(names)} files, at most {most} at once")
    return 0


class Run(exports.Run):
    def run(self) -> None:
        code = fanout(environment.get_arguments())
        sys.stdout.flush()
        sys.stderr.flush()
        if code != 0:
            raise Err(None)
