"""Python's `subprocess` for componentize-py guests of wasmproc.

`import wasmproc_subprocess as subprocess` and use it as the standard
library's: `run`, `Popen`, `call`, `check_call`, `check_output`,
`getoutput`, `getstatusoutput`, `PIPE`, `DEVNULL`, `STDOUT`,
`CalledProcessError`, `TimeoutExpired`. Children are real OS processes
started by the wasmproc host under its policy: a program must be granted
(`--allow-run`), a missing one, or one not granted, raises
FileNotFoundError, another refusal PermissionError; the message names
what was refused.

Why a module of its own rather than the standard one: CPython's
`subprocess` needs fork/exec and file descriptors, which a component does
not have; this one keeps its API over wasmproc:process (through `_wit`, the
only module that touches the raw bindings) and wasi poll. `fork` starts a
worker component with a message channel (see `wasmproc_subprocess.workers`).
What differs from CPython is listed in the package's README.
"""

import re
import io
import math
import os

# Imported now, while componentize-py builds the component: it keeps only
# the bindings imported by then.
from . import _wit
from .workers import Worker, fork, parent

__all__ = [
    "Popen",
    "PIPE",
    "STDOUT",
    "DEVNULL",
    "call",
    "check_call",
    "check_output",
    "run",
    "getoutput",
    "getstatusoutput",
    "CalledProcessError",
    "SubprocessError",
    "TimeoutExpired",
    "CompletedProcess",
    "fork",
    "parent",
    "Worker",
]

PIPE = -1
STDOUT = -2
DEVNULL = -3

SIGKILL = 9
SIGTERM = 15

_READ_SIZE = 65536


class SubprocessError(Exception):
    pass


class CalledProcessError(SubprocessError):
    """Raised when run(check=True), check_call or check_output sees a
    non-zero returncode."""

    def __init__(self, returncode, cmd, output=None, stderr=None):
        self.returncode = returncode
        self.cmd = cmd
        self.output = output
        self.stderr = stderr

    def __str__(self):
        if self.returncode and self.returncode < 0:
            return "Command '%s' died with signal %d." % (self.cmd, -self.returncode)
        return "Command '%s' returned non-zero exit status %d." % (self.cmd, self.returncode)

    @property
    def stdout(self):
        return self.output

    @stdout.setter
    def stdout(self, value):
        self.output = value


class TimeoutExpired(SubprocessError):
    """Raised when a timeout expires while waiting for a child."""

    def __init__(self, cmd, timeout, output=None, stderr=None):
        self.cmd = cmd
        self.timeout = timeout
        self.output = output
        self.stderr = stderr

    def __str__(self):
        return "Command '%s' timed out after %s seconds" % (self.cmd, self.timeout)

    @property
    def stdout(self):
        return self.output

    @stdout.setter
    def stdout(self, value):
        self.output = value


class CompletedProcess:
    """What run() returns."""

    def __init__(self, args, returncode, stdout=None, stderr=None):
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self):
        args = ["args={!r}".format(self.args), "returncode={!r}".format(self.returncode)]
        if self.stdout is not None:
            args.append("stdout={!r}".format(self.stdout))
        if self.stderr is not None:
            args.append("stderr={!r}".format(self.stderr))
        return "{}({})".format(type(self).__name__, ", ".join(args))

    def check_returncode(self):
        if self.returncode:
            raise CalledProcessError(self.returncode, self.args, self.stdout, self.stderr)


# The exception, errno and text for each WIT error-code. The errno values
# are Linux's, where the children run (wasi-libc's `errno` module numbers
# them differently: ENOENT is 44 there).
_ERRORS = {
    "not-found": (FileNotFoundError, 2, "No such file or directory"),
    "access-denied": (PermissionError, 13, "Permission denied"),
    "invalid-argument": (ValueError, None, None),
    "limit-exceeded": (BlockingIOError, 11, "Resource temporarily unavailable"),
    "timed-out": (TimeoutError, 110, "Connection timed out"),
    "unsupported": (OSError, 38, "Function not implemented"),
    "io": (OSError, 5, "Input/output error"),
}


# A denial of a program, component, shell or working directory that was
# not granted: outside its grants nothing exists for a guest (the sandbox
# shows no path outside them either), so scripts, which catch
# FileNotFoundError, get that, with the host's message naming the grant.
_NOT_GRANTED = re.compile(
    r"^((program|component|shell) `[^`]*` is not (allowed|granted)"
    r"|no shell is granted|working directory `[^`]*` is outside)"
)


def _os_error(e, program, cwd=None):
    """The OSError CPython raises for the same failure: FileNotFoundError
    for a missing program or directory, or one not granted,
    PermissionError for another policy denial (with the host's message),
    ..."""
    wit = _wit
    if not isinstance(e, wit.WitError):
        return e
    kind = e.kind
    if kind == "access-denied" and _NOT_GRANTED.match(e.message):
        kind = "not-found"
    cls, code, text = _ERRORS.get(kind, _ERRORS["io"])
    if code is None:
        return cls(f"{program}: {e.kind}: {e.message}")
    filename = cwd if kind == "not-found" and cwd is not None and "directory" in e.message else program
    err = cls(code, f"{text} (wasmproc {e.kind}: {e.message})", filename)
    err.wasmproc_code = e.kind
    return err


class _RawReader(io.RawIOBase):
    """A child's stdout or stderr as a raw file (wrapped in io.BufferedReader
    and, in text mode, io.TextIOWrapper, as CPython's are)."""

    def __init__(self, stream):
        self._stream = stream

    def readable(self):
        return True

    def readinto(self, b):
        if self._stream is None:
            return 0
        data = b""
        while not data:  # an empty read is not the end
            data = self._stream.blocking_read(len(b))
            if data is None:
                return 0
        b[: len(data)] = data
        return len(data)

    def close(self):
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        super().close()


class _RawWriter(io.RawIOBase):
    """A child's stdin as a raw file; close() is the child's EOF."""

    def __init__(self, stream):
        self._stream = stream

    def writable(self):
        return True

    def write(self, b):
        self._stream.write_all(bytes(b))
        return len(b)

    def close(self):
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        super().close()


def _stdio(value, name):
    if value is None:
        return "inherit"
    if value == PIPE:
        return "pipe"
    if value == DEVNULL:
        return "null"
    if value == STDOUT and name == "stderr":
        return "pipe"
    allowed = "None, PIPE, DEVNULL" + (", STDOUT" if name == "stderr" else "")
    raise ValueError(f"{name}={value!r} is not supported by wasmproc_subprocess (use {allowed})")


class Popen:
    """A child process, as CPython's Popen: args, pid, returncode, stdin,
    stdout, stderr (file objects for PIPE), poll, wait, communicate, kill,
    terminate, send_signal, and use as a context manager."""

    def __init__(
        self,
        args,
        bufsize=-1,
        executable=None,
        stdin=None,
        stdout=None,
        stderr=None,
        preexec_fn=None,
        close_fds=True,
        shell=False,
        cwd=None,
        env=None,
        universal_newlines=None,
        startupinfo=None,
        creationflags=0,
        restore_signals=True,
        start_new_session=False,
        pass_fds=(),
        *,
        user=None,
        group=None,
        extra_groups=None,
        encoding=None,
        errors=None,
        text=None,
        umask=-1,
        pipesize=-1,
        process_group=None,
    ):
        if (
            preexec_fn is not None
            or pass_fds
            or user is not None
            or group is not None
            or extra_groups is not None
        ):
            raise ValueError(
                "preexec_fn, pass_fds, user, group and extra_groups are not supported by wasmproc_subprocess"
            )
        self.args = args
        self.returncode = None
        self.text_mode = bool(text or universal_newlines or encoding or errors)
        self.encoding = encoding
        self.errors = errors
        if isinstance(args, (str, bytes, os.PathLike)):
            argv = [os.fsdecode(args)]
        else:
            argv = [os.fsdecode(a) for a in args]
        if shell:
            argv = ["/bin/sh", "-c"] + argv
        if executable is not None:
            argv[0] = os.fsdecode(executable)
        program, rest = argv[0], argv[1:]
        env_pairs = [(os.fsdecode(k), os.fsdecode(v)) for k, v in (env or {}).items()]
        self._merge_stderr = stderr == STDOUT
        modes = (_stdio(stdin, "stdin"), _stdio(stdout, "stdout"), _stdio(stderr, "stderr"))
        cwd = os.fsdecode(cwd) if cwd is not None else None
        try:
            self._child = _wit.spawn(program, rest, cwd, env_pairs, *modes)
        except Exception as e:
            raise _os_error(e, program, cwd) from None
        self.pid = self._child.pid
        self._out = {}  # communicate()'s output so far, by stream name
        self._input_done = False
        self.stdin = self.stdout = self.stderr = None
        if self._child.stdin is not None:
            f = io.BufferedWriter(_RawWriter(self._child.stdin))
            self.stdin = (
                io.TextIOWrapper(f, encoding=encoding, errors=errors, write_through=True)
                if self.text_mode
                else f
            )
        if self._child.stdout is not None:
            self.stdout = self._reader(self._child.stdout)
        if self._child.stderr is not None and not self._merge_stderr:
            self.stderr = self._reader(self._child.stderr)

    def _reader(self, stream):
        f = io.BufferedReader(_RawReader(stream))
        return io.TextIOWrapper(f, encoding=self.encoding, errors=self.errors) if self.text_mode else f

    def __repr__(self):
        return f"<Popen: returncode: {self.returncode} args: {self.args!r}>"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, value, traceback):
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        try:
            if self.stdin is not None:
                self.stdin.close()
        except BrokenPipeError:
            pass
        self.wait()

    def _exited(self, returncode):
        self.returncode = returncode
        self._child.close()  # the streams stay readable

    def poll(self):
        """The returncode if the child has exited, else None."""
        if self.returncode is None:
            code = self._child.try_wait()
            if code is not None:
                self._exited(code)
        return self.returncode

    def wait(self, timeout=None):
        """Waits for the child to exit and returns its returncode; raises
        TimeoutExpired after `timeout` seconds."""
        if self.returncode is not None:
            return self.returncode
        if timeout is None:
            self._exited(self._child.wait())
            return self.returncode
        # The host's wait-timeout: the child is left running if it expires.
        code = self._child.wait_timeout(max(0, math.ceil(timeout * 1000)))
        if code is None:
            raise TimeoutExpired(self.args, timeout)
        self._exited(code)
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            self._child.kill(int(sig))

    def terminate(self):
        self.send_signal(SIGTERM)

    def kill(self):
        self.send_signal(SIGKILL)

    def communicate(self, input=None, timeout=None):
        """Sends `input` to stdin, reads stdout and stderr to their end and
        waits for the child: (stdout, stderr), each None if not PIPE. After
        TimeoutExpired, calling it again goes on where it stopped."""
        wit = _wit
        deadline = None if timeout is None else wit.monotonic() + timeout
        if input is not None and self.text_mode:
            input = input.encode(self.encoding or "utf-8", self.errors or "strict")
        if not self._out:
            self._pending_input = memoryview(input or b"")
            if self.stdin is not None and not self.stdin.closed:
                try:
                    self.stdin.flush()
                except BrokenPipeError:
                    pass
            # Readers still open: their raw streams, read here directly.
            for name in ("stdout", "stderr"):
                stream = getattr(self._child, name)
                if stream is not None:
                    self._out[name] = []
            self._readers = {n: getattr(self._child, n) for n in self._out}
        while True:
            waits = []
            if self.stdin is not None and not self._input_done:
                if len(self._pending_input) == 0:
                    self._close_stdin()
                else:
                    waits.append(("stdin", self._child.stdin.subscribe()))
            for name, stream in self._readers.items():
                if stream is not None:
                    waits.append((name, stream.subscribe()))
            if not waits:
                break
            pollables = [p for _, p in waits]
            if deadline is not None:
                left = deadline - wit.monotonic()
                if left <= 0:
                    for p in pollables:
                        p.__exit__(None, None, None)
                    raise self._timeout(timeout)
                pollables.append(wit.sleep_pollable(left))
            for i in wit.poll(pollables):
                if i >= len(waits):
                    continue
                name = waits[i][0]
                if name == "stdin":
                    self._feed_stdin()
                else:
                    data = self._readers[name].read(_READ_SIZE)
                    if data is None:
                        self._readers[name].close()
                        self._readers[name] = None
                    elif data:
                        self._out["stdout" if self._merge_stderr else name].append(data)
        if deadline is None:
            self.wait()
        else:
            try:
                self.wait(max(0, deadline - wit.monotonic()))
            except TimeoutExpired:
                raise self._timeout(timeout) from None
        return self._result("stdout"), self._result("stderr")

    def _close_stdin(self):
        self._input_done = True
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass

    def _feed_stdin(self):
        stream = self._child.stdin
        try:
            n = stream.check_write()
            if n:
                chunk = self._pending_input[:n]
                stream.write(bytes(chunk))
                stream.flush()
                self._pending_input = self._pending_input[len(chunk) :]
        except BrokenPipeError:
            self._pending_input = memoryview(b"")
        if len(self._pending_input) == 0:
            self._close_stdin()

    def _result(self, name):
        if name not in self._out or (name == "stderr" and self._merge_stderr):
            return None
        data = b"".join(self._out[name])
        if self.text_mode:
            data = data.decode(self.encoding or "utf-8", self.errors or "strict").replace("\r\n", "\n")
        return data

    def _timeout(self, timeout):
        # As CPython: what was read so far, None for a stream with nothing.
        out = b"".join(self._out.get("stdout", [])) or None
        err = None if self._merge_stderr else b"".join(self._out.get("stderr", [])) or None
        return TimeoutExpired(self.args, timeout, out, err)


def run(*popenargs, input=None, capture_output=False, timeout=None, check=False, **kwargs):
    """Runs a command and returns a CompletedProcess, as CPython's run."""
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = PIPE
        kwargs["stderr"] = PIPE
    with Popen(*popenargs, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except TimeoutExpired:
            process.kill()
            process.wait()
            raise
        except BaseException:
            process.kill()
            raise
        retcode = process.poll()
        if check and retcode:
            raise CalledProcessError(retcode, process.args, output=stdout, stderr=stderr)
    return CompletedProcess(process.args, retcode, stdout, stderr)


def call(*popenargs, timeout=None, **kwargs):
    """Runs a command and returns its returncode."""
    with Popen(*popenargs, **kwargs) as p:
        try:
            return p.wait(timeout=timeout)
        except BaseException:
            p.kill()
            raise


def check_call(*popenargs, **kwargs):
    """As call(), raising CalledProcessError for a non-zero returncode."""
    retcode = call(*popenargs, **kwargs)
    if retcode:
        cmd = kwargs.get("args")
        if cmd is None:
            cmd = popenargs[0]
        raise CalledProcessError(retcode, cmd)
    return 0


def check_output(*popenargs, timeout=None, **kwargs):
    """Runs a command and returns its stdout, raising CalledProcessError for
    a non-zero returncode."""
    if "stdout" in kwargs:
        raise ValueError("stdout argument not allowed, it will be overridden.")
    if "input" in kwargs and kwargs["input"] is None:
        kwargs["input"] = (
            ""
            if kwargs.get("universal_newlines")
            or kwargs.get("text")
            or kwargs.get("encoding")
            or kwargs.get("errors")
            else b""
        )
    return run(*popenargs, stdout=PIPE, timeout=timeout, check=True, **kwargs).stdout


def getstatusoutput(cmd, *, encoding=None, errors=None):
    """(exitcode, output) of `cmd` run through the shell the host granted
    (`--allow-shell`), stderr merged into stdout after it, trailing newline
    removed."""
    try:
        res = _wit.exec_shell(f"{{ {cmd}\n}} 2>&1")
    except Exception as e:
        raise _os_error(e, "/bin/sh") from None
    data = res.stdout.decode(encoding or "utf-8", errors or "strict")
    if data[-1:] == "\n":
        data = data[:-1]
    return res.returncode, data


def getoutput(cmd, *, encoding=None, errors=None):
    """The output of `cmd` run through the granted shell (see
    getstatusoutput)."""
    return getstatusoutput(cmd, encoding=encoding, errors=errors)[1]
