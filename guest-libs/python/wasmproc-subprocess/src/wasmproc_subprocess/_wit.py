"""The only module that calls the raw wasmproc:process bindings (and the few
wasi imports the library needs).

Why one module: the generated names, record fields and variant shapes of
the WIT package (wasmproc:process@0.2.0) are written here only, so that a
new version changes this file and nothing else. Everything above it sees
plain values: a return code (negative for a signal, as CPython's; 134 for
a worker whose guest trapped, as the host reports it), bytes, `None` at
the end of a stream, and `WitError` for a failed call.

The bindings exist only inside a component (componentize-py generates
`wit_world` when it builds one, and keeps only the interfaces imported
while it builds: so every import is here, at the top). `parent` exists only
in a worker's world. The interface named `exec` is imported under another
name: `from wit_world.imports import exec` would shadow the builtin.
"""

from componentize_py_types import Err
from wit_world.imports import exec as wit_exec
from wit_world.imports import exit as wit_exit
from wit_world.imports import fork as wit_fork
from wit_world.imports import monotonic_clock, streams
from wit_world.imports import poll as wit_poll
from wit_world.imports import spawn as wit_spawn
from wit_world.imports import wasmproc_process_types as types

try:
    from wit_world.imports import parent as wit_parent
except ImportError:  # not a worker (world command)
    wit_parent = None

# WIT error-code case names by generated class (every case carries the
# host's message).
_KINDS = {
    types.ErrorCode_AccessDenied: "access-denied",
    types.ErrorCode_NotFound: "not-found",
    types.ErrorCode_InvalidArgument: "invalid-argument",
    types.ErrorCode_LimitExceeded: "limit-exceeded",
    types.ErrorCode_TimedOut: "timed-out",
    types.ErrorCode_Closed: "closed",
    types.ErrorCode_Unsupported: "unsupported",
    types.ErrorCode_Io: "io",
}

# The WIT `stdio` variant for each mode.
_STDIO = {"pipe": types.Stdio_Piped, "inherit": types.Stdio_Inherit, "null": types.Stdio_Null}


def _stdio(mode):
    return _STDIO[mode]()


class WitError(Exception):
    """A failed wasmproc call: `kind` is the WIT error-code case name
    (`access-denied`, `not-found`, ...), `message` the host's text."""

    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def _wit_error(value):
    kind = _KINDS.get(type(value), "io")
    message = getattr(value, "value", None) or kind
    return WitError(kind, message)


def _call(f, *args):
    try:
        return f(*args)
    except Err as e:
        raise _wit_error(e.value) from None


def _returncode(status):
    """CPython's returncode for an exit-status: the code, or -signal."""
    if isinstance(status, types.ExitStatus_Exited):
        return status.value
    return -status.value


def _terminated(termination):
    """The returncode of a `termination` (a trapped worker's is 134, its
    exit status; the trap message is not kept)."""
    return _returncode(termination.status)


def _drop(resource):
    if resource is not None:
        resource.__exit__(None, None, None)


class ExecResult:
    """What `exec_file`/`exec_shell` return."""

    def __init__(self, out):
        self.pid = out.pid
        self.returncode = _returncode(out.status)
        self.stdout = bytes(out.stdout)
        self.stderr = bytes(out.stderr)
        self.timed_out = out.timed_out
        self.truncated = out.stdout_truncated or out.stderr_truncated


def _exec_options(cwd, env, timeout_ms, kill_signal, max_buffer, input, shell=None):
    return wit_exec.ExecOptions(
        cwd=cwd,
        env=list(env),
        timeout_ms=timeout_ms,
        kill_signal=kill_signal,
        max_buffer=max_buffer,
        stdin=input,
        uid=None,
        gid=None,
        shell=shell,
    )


def exec_shell(
    command,
    cwd=None,
    env=(),
    timeout_ms=None,
    kill_signal=None,
    max_buffer=None,
    input=None,
    shell=None,
):
    """Runs `command` through a shell the host granted (`shell`, by file
    name or path, else the first), to completion."""
    options = _exec_options(cwd, env, timeout_ms, kill_signal, max_buffer, input, shell)
    return ExecResult(_call(wit_exec.exec, command, options))


def exec_file(
    program, args, cwd=None, env=(), timeout_ms=None, kill_signal=None, max_buffer=None, input=None
):
    """Runs `program` without a shell, to completion."""
    options = _exec_options(cwd, env, timeout_ms, kill_signal, max_buffer, input)
    return ExecResult(_call(wit_exec.exec_file, program, list(args), options))


class InStream:
    """A readable wasi:io input-stream."""

    def __init__(self, stream):
        self.stream = stream

    def subscribe(self):
        return self.stream.subscribe()

    def read(self, n):
        """Up to n bytes (maybe none yet); None at the end."""
        try:
            return self.stream.read(n)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                return None
            raise OSError(5, "read failed") from None

    def blocking_read(self, n):
        """Some bytes, blocking until there are any; None at the end."""
        try:
            return self.stream.blocking_read(n)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                return None
            raise OSError(5, "read failed") from None

    def close(self):
        _drop(self.stream)
        self.stream = None


class OutStream:
    """A writable wasi:io output-stream."""

    def __init__(self, stream):
        self.stream = stream

    def subscribe(self):
        return self.stream.subscribe()

    def check_write(self):
        """How many bytes `write` takes now; raises BrokenPipeError once the
        reader is gone."""
        try:
            return self.stream.check_write()
        except Err:
            raise BrokenPipeError(32, "Broken pipe") from None

    def write(self, data):
        try:
            self.stream.write(data)
        except Err:
            raise BrokenPipeError(32, "Broken pipe") from None

    def write_all(self, data):
        """Writes all of data, blocking."""
        try:
            for i in range(0, len(data), 4096):
                self.stream.blocking_write_and_flush(data[i : i + 4096])
        except Err:
            raise BrokenPipeError(32, "Broken pipe") from None

    def flush(self):
        try:
            self.stream.flush()
        except Err:
            raise BrokenPipeError(32, "Broken pipe") from None

    def close(self):
        _drop(self.stream)
        self.stream = None


class Child:
    """A spawned child: pid, stdin (OutStream or None), stdout and stderr
    (InStream or None)."""

    def __init__(self, child):
        self.child = child
        self.pid = child.pid()
        s = child.take_stdin()
        self.stdin = OutStream(s) if s is not None else None
        s = child.take_stdout()
        self.stdout = InStream(s) if s is not None else None
        s = child.take_stderr()
        self.stderr = InStream(s) if s is not None else None

    def subscribe_exit(self):
        """A pollable ready once the child has exited."""
        return self.child.subscribe()

    def try_wait(self):
        """The returncode once exited, else None."""
        t = _call(self.child.try_wait)
        return None if t is None else _terminated(t)

    def wait(self):
        return _terminated(_call(self.child.wait))

    def wait_timeout(self, timeout_ms):
        """The returncode, waiting at most `timeout_ms`; None if the child
        still runs then."""
        try:
            return _terminated(_call(self.child.wait_timeout, timeout_ms))
        except WitError as e:
            if e.kind == "timed-out":
                return None
            raise

    def kill(self, signal):
        _call(self.child.kill, signal)

    def close(self):
        """Drops the child (its process group is killed if still there);
        its streams stay usable."""
        _drop(self.child)
        self.child = None


def spawn(program, args, cwd=None, env=(), stdin="null", stdout="inherit", stderr="inherit"):
    """Starts `program`; each stdio is "pipe", "inherit" or "null"."""
    options = wit_spawn.SpawnOptions(
        cwd=cwd,
        env=list(env),
        stdin=_stdio(stdin),
        stdout=_stdio(stdout),
        stderr=_stdio(stderr),
        uid=None,
        gid=None,
        timeout_ms=None,
        kill_signal=None,
    )
    return Child(_call(wit_spawn.spawn, program, list(args), options))


class Worker:
    """A forked worker and its message channel."""

    def __init__(self, worker):
        self.worker = worker
        self.pid = worker.pid()
        s = worker.take_stdout()
        self.stdout = InStream(s) if s is not None else None
        s = worker.take_stderr()
        self.stderr = InStream(s) if s is not None else None

    def send(self, data):
        _call(self.worker.send, data)

    def receive(self):
        """The next message, blocking; None once the channel is closed."""
        try:
            return _call(self.worker.receive)
        except WitError as e:
            if e.kind == "closed":
                return None
            raise

    def subscribe(self):
        return self.worker.subscribe()

    def close_channel(self):
        """Closes the channel: what was sent is still delivered, then the
        worker's receive ends; the worker keeps running."""
        self.worker.close_channel()

    def subscribe_exit(self):
        return self.worker.subscribe_exit()

    def try_wait(self):
        t = _call(self.worker.try_wait)
        return None if t is None else _terminated(t)

    def wait(self):
        return _terminated(_call(self.worker.wait))

    def wait_timeout(self, timeout_ms):
        """The returncode, waiting at most `timeout_ms`; None if the worker
        still runs then."""
        try:
            return _terminated(_call(self.worker.wait_timeout, timeout_ms))
        except WitError as e:
            if e.kind == "timed-out":
                return None
            raise

    def kill(self, signal):
        _call(self.worker.kill, signal)

    def close(self):
        _drop(self.worker)
        self.worker = None


def fork(
    component,
    args,
    programs=(),
    dirs=(),
    allow_env=(),
    env=(),
    shell=False,
    stdout="inherit",
    stderr="inherit",
    limits=None,
    forks=(),
    placement=None,
):
    """Forks `component`. dirs: (path, read_only) pairs; limits: a dict of
    worker-limits fields (max_live_children, max_total_spawns, max_buffer,
    max_timeout_ms, cpu_seconds, address_space, open_files, processes,
    file_size); forks: components it may fork in turn; placement: None or
    "local", "cluster", or a list of labels."""
    fields = (
        "max_live_children",
        "max_total_spawns",
        "max_buffer",
        "max_timeout_ms",
        "cpu_seconds",
        "address_space",
        "open_files",
        "processes",
        "file_size",
    )
    limits = limits or {}
    unknown = set(limits) - set(fields)
    if unknown:
        raise TypeError(f"unknown worker limits: {', '.join(sorted(unknown))}")
    options = wit_fork.ForkOptions(
        programs=list(programs),
        dirs=[wit_fork.DirGrant(path=p, read_only=bool(ro)) for p, ro in dirs],
        allow_env=list(allow_env),
        env=list(env),
        shell=bool(shell),
        forks=list(forks),
        stdout=_stdio(stdout),
        stderr=_stdio(stderr),
        limits=wit_fork.WorkerLimits(**{f: limits.get(f) for f in fields}),
        uid=None,
        gid=None,
        placement=_placement(placement),
    )
    return Worker(_call(wit_fork.fork, component, list(args), options))


def _placement(placement):
    if placement is None or placement == "local":
        return wit_fork.Placement_Local()
    if placement == "cluster":
        return wit_fork.Placement_Cluster()
    if isinstance(placement, (list, tuple)):
        return wit_fork.Placement_Labels([str(label) for label in placement])
    raise ValueError(f"placement {placement!r}: use 'local', 'cluster' or a list of labels")


def _parent():
    if wit_parent is None:
        raise RuntimeError("not a forked worker: build it for world wasmproc:process/worker-command")
    return wit_parent


def parent_send(data):
    """Sends a message to the parent (a worker's world only)."""
    _call(_parent().send, data)


def parent_close():
    """Closes the channel to the parent (a worker's world only): what was
    sent is still delivered, then the parent's receive ends."""
    _parent().close()


def parent_receive():
    """The parent's next message, blocking; None once it closed the channel."""
    try:
        return _call(_parent().receive)
    except WitError as e:
        if e.kind == "closed":
            return None
        raise


def poll(pollables):
    """Blocks until one of `pollables` is ready; returns the ready indexes
    and drops the pollables."""
    try:
        return list(wit_poll.poll(pollables))
    finally:
        for p in pollables:
            _drop(p)


def monotonic():
    """Seconds on the monotonic clock."""
    return monotonic_clock.now() / 1e9


def sleep_pollable(seconds):
    """A pollable ready after `seconds`."""
    return monotonic_clock.subscribe_duration(max(0, int(seconds * 1e9)))


def exit(code):
    """Ends the component with `code`."""
    wit_exit.exit_with_code(code & 0xFF)
