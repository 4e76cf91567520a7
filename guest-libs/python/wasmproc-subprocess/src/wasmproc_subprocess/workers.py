"""Forked workers: another component in its own OS process, with a message
channel (wasmproc's `fork`, as Node's child_process.fork).

Parent side::

    from wasmproc_subprocess import fork
    with fork("worker.wasm", ["arg"]) as worker:
        worker.send({"job": 1})
        worker.close()                  # no more messages: the worker's loop ends
        for message in worker:          # until the worker closes the channel or exits
            print(message)
    print(worker.returncode)

Worker side (a component built for world wasmproc:process/worker-command)::

    from wasmproc_subprocess import parent
    for message in parent:              # until the parent closes the channel
        parent.send({"done": message})
    parent.close()                      # optional: exiting closes it too

`close()` on either side closes the channel as Node's `disconnect()`: what
was sent before is still delivered, then the other side's iteration ends;
this side can no longer send, and receives nothing more; both processes
keep running.

Messages are JSON values (as Node's process.send), so Python and
JavaScript workers talk to each other; `send_bytes`/`receive_bytes` pass raw
bytes.
"""

import json
import math

from . import _wit

__all__ = ["Worker", "fork", "parent"]


def _encode(message):
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def _decode(data):
    return None if data is None else json.loads(data.decode("utf-8"))


_END = object()


class Worker:
    """A forked worker: send, receive, iteration over its messages, wait,
    kill; as a context manager it waits for the worker on exit."""

    def __init__(self, handle, component, args):
        self._handle = handle
        self.component = component
        self.args = args
        self.pid = handle.pid
        self.returncode = None

    def send(self, message):
        """Sends a JSON value; blocks while the channel's queue is full."""
        self.send_bytes(_encode(message))

    def send_bytes(self, data):
        self._handle.send(bytes(data))

    def receive(self, default=_END):
        """The next message, blocking. Once the worker has closed the
        channel (or exited) and every message was received: `default` if
        given, else EOFError."""
        data = self.receive_bytes()
        if data is None:
            if default is _END:
                raise EOFError("the worker closed the channel")
            return default
        return _decode(data)

    def receive_bytes(self):
        """The next message as bytes, or None once the channel is closed."""
        return self._handle.receive()

    def close(self):
        """Closes the channel (Node's disconnect): what was sent is still
        delivered, then the worker's receive ends; messages the worker
        sends from now on are dropped. The worker keeps running."""
        self._handle.close_channel()

    def __iter__(self):
        while True:
            data = self.receive_bytes()
            if data is None:
                return
            yield _decode(data)

    def poll(self):
        if self.returncode is None:
            self.returncode = self._handle.try_wait()
        return self.returncode

    def wait(self, timeout=None):
        """Waits for the worker to exit and returns its exit code (134 if
        its guest trapped); raises subprocess.TimeoutExpired after
        `timeout` seconds (the worker is left running)."""
        if self.returncode is None:
            if timeout is None:
                self.returncode = self._handle.wait()
            else:
                code = self._handle.wait_timeout(max(0, math.ceil(timeout * 1000)))
                if code is None:
                    from . import TimeoutExpired

                    raise TimeoutExpired(self.component, timeout)
                self.returncode = code
        return self.returncode

    def kill(self, signal=9):
        if self.poll() is None:
            self._handle.kill(signal)

    def terminate(self):
        self.kill(15)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.wait()
        self._handle.close()


def fork(
    component,
    args=(),
    *,
    programs=(),
    dirs=(),
    allow_env=(),
    env=None,
    shell=False,
    stdout=None,
    stderr=None,
    limits=None,
    forks=(),
    placement=None,
):
    """Starts the worker component `component` (granted with
    `--allow-fork`) with `args`. It may do only what it is given here, a
    part of what this guest holds: `programs` it may run, `dirs` as paths
    or (path, read_only) pairs, `allow_env` names, `shell`, `limits` (a
    dict: max_live_children, max_buffer, max_timeout_ms, ...), `forks`
    (components it may fork in turn). `env` is its own environment;
    `stdout`/`stderr` None (ours), PIPE or DEVNULL; `placement` None (this
    machine), "cluster" or a list of agent labels."""
    from . import DEVNULL, PIPE, _os_error

    def mode(value):
        return {None: "inherit", PIPE: "pipe", DEVNULL: "null"}[value]

    dirs = [(d, False) if isinstance(d, str) else (d[0], bool(d[1])) for d in dirs]
    try:
        handle = _wit.fork(
            component,
            [str(a) for a in args],
            programs,
            dirs,
            allow_env,
            list((env or {}).items()),
            shell,
            mode(stdout),
            mode(stderr),
            limits,
            forks,
            placement,
        )
    except Exception as e:
        raise _os_error(e, component) from None
    return Worker(handle, component, list(args))


class _Parent:
    """The channel to the parent, in a forked worker."""

    def send(self, message):
        """Sends a JSON value to the parent."""
        _wit.parent_send(_encode(message))

    def send_bytes(self, data):
        _wit.parent_send(bytes(data))

    def receive(self, default=_END):
        """The parent's next message, blocking; `default` (else EOFError)
        once the parent has closed the channel or exited."""
        data = _wit.parent_receive()
        if data is None:
            if default is _END:
                raise EOFError("the parent closed the channel")
            return default
        return _decode(data)

    def receive_bytes(self):
        return _wit.parent_receive()

    def close(self):
        """Closes the channel to the parent (Node's process.disconnect()):
        what was sent is still delivered, then the parent's receive ends;
        this worker keeps running."""
        _wit.parent_close()

    def __iter__(self):
        while True:
            data = _wit.parent_receive()
            if data is None:
                return
            yield _decode(data)


parent = _Parent()
