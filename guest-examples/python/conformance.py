"""conformance PYTHON [denied]: exercises the subprocess API and prints what
it observes, one line per observation.

Run by CPython with the standard library's `subprocess`
(`python3 conformance.py /usr/bin/python3`) and, built with componentize-py,
as a wasmproc component with `wasmproc_subprocess`
(guest-libs/python/wasmproc-subprocess): the two outputs must be identical
(tests/python_subprocess.rs). PYTHON is the interpreter the children run,
granted to the component. With `denied` (wasmproc only) it shows what a
policy denial raises instead.
"""

import sys

if sys.platform == "wasi":
    import wasmproc_subprocess as subprocess
else:
    import subprocess

PIPE, DEVNULL, STDOUT = subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT


def show(label, value):
    print(f"{label}: {value!r}", flush=True)


def conformance(py):
    def code(source):
        return [py, "-c", source]

    # run: capture_output, text, input, check, cwd, env
    r = subprocess.run(
        code("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"), capture_output=True
    )
    show("run capture_output", (r.returncode, r.stdout, r.stderr))
    show(
        "run repr",
        repr(r) == f"CompletedProcess(args={r.args!r}, returncode=3, stdout=b'out\\n', stderr=b'err\\n')",
    )
    r = subprocess.run(code("print('text')"), capture_output=True, text=True)
    show("run text", (r.returncode, r.stdout, r.stderr))
    r = subprocess.run(
        code("import sys; sys.stdout.write(sys.stdin.read().upper())"), input=b"hello", capture_output=True
    )
    show("run input", r.stdout)
    r = subprocess.run(
        code("import sys; sys.stdout.write(sys.stdin.read()[::-1])"),
        input="text input",
        capture_output=True,
        text=True,
    )
    show("run input text", r.stdout)
    r = subprocess.run(code("print('not captured')"), stdout=DEVNULL)
    show("run DEVNULL", (r.returncode, r.stdout, r.stderr))
    r = subprocess.run(code("import sys; sys.stderr.write('to stderr')"), stdout=PIPE, stderr=STDOUT)
    show("run STDOUT", (r.stdout, r.stderr))
    try:
        subprocess.run(code("raise SystemExit(4)"), check=True)
    except subprocess.CalledProcessError as e:
        show("run check", (e.returncode, e.cmd == code("raise SystemExit(4)"), e.stdout, e.stderr))
        show("CalledProcessError", str(e) == f"Command '{e.cmd}' returned non-zero exit status 4.")
    r = subprocess.run(
        code("import os; print(os.path.basename(os.getcwd()), os.environ.get('GREETING'))"),
        cwd="sub",
        env={"GREETING": "hi"},
        capture_output=True,
        text=True,
    )
    show("run cwd env", r.stdout)
    r = subprocess.run("echo $((2 + 3))", shell=True, capture_output=True)
    show("run shell", r.stdout)

    # timeouts: run kills the child; communicate can be called again
    try:
        subprocess.run(code("import time; time.sleep(20)"), timeout=0.5)
    except subprocess.TimeoutExpired as e:
        # CPython's run reports the time that was left of the timeout.
        show("run timeout", (round(e.timeout, 1), e.stdout, e.stderr))
        show("TimeoutExpired", str(e).startswith(f"Command '{e.cmd}' timed out after 0."))
    try:
        subprocess.run(
            code("import time; print('partial', flush=True); time.sleep(20)"),
            capture_output=True,
            timeout=1.5,
        )
    except subprocess.TimeoutExpired as e:
        show("run timeout output", (e.stdout, e.stderr))
    p = subprocess.Popen(
        code("import time; print('first', flush=True); time.sleep(3); print('second')"), stdout=PIPE
    )
    try:
        p.communicate(timeout=1.5)
    except subprocess.TimeoutExpired as e:
        show("communicate timeout", (e.stdout, p.returncode))
    show("communicate again", (p.communicate(), p.returncode))

    # Popen: file objects, context manager, poll, signals, wait(timeout)
    with subprocess.Popen(
        code("import sys\nfor line in sys.stdin: print(line.strip()[::-1], flush=True)"),
        stdin=PIPE,
        stdout=PIPE,
        text=True,
    ) as p:
        p.stdin.write("abc\n")
        p.stdin.flush()
        show("readline", p.stdout.readline())
        p.stdin.write("hello\nworld\n")
        p.stdin.close()
        show("read rest", p.stdout.read())
        show("pid", isinstance(p.pid, int) and p.pid > 0)
    show("with returncode", p.returncode)
    with subprocess.Popen(
        code("import sys; sys.stdout.buffer.write(bytes(range(256)) * 1000)"), stdout=PIPE
    ) as p:
        data = p.stdout.read()
    show("binary read", (len(data), data[:4], data == bytes(range(256)) * 1000, p.returncode))
    p = subprocess.Popen(
        code("import sys; print(len(sys.stdin.read()))"), stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    show("communicate big input", p.communicate(b"x" * 3_000_000))
    sleeper = code("import time; time.sleep(30)")
    p = subprocess.Popen(sleeper)
    show("poll running", p.poll())
    try:
        p.wait(timeout=0.2)
    except subprocess.TimeoutExpired as e:
        show("wait timeout", e.timeout)
    p.kill()
    show("kill", (p.wait(), p.poll(), p.returncode))
    p = subprocess.Popen(sleeper)
    p.terminate()
    show("terminate", p.wait())
    p = subprocess.Popen(sleeper)
    p.send_signal(10)  # SIGUSR1
    show("send_signal", p.wait())
    p = subprocess.Popen(code("raise SystemExit(7)"))
    show("wait", p.wait())

    # check_output, check_call, call
    show("check_output", subprocess.check_output(code("print('x')")))
    show("check_output text", subprocess.check_output(code("print('y')"), text=True))
    show(
        "check_output input",
        subprocess.check_output(code("import sys; print(sys.stdin.read())"), input=b"in"),
    )
    try:
        subprocess.check_output(code("print('o'); raise SystemExit(6)"))
    except subprocess.CalledProcessError as e:
        show("check_output fails", (e.returncode, e.output, e.stdout))
    show("check_call", subprocess.check_call(code("pass")))
    try:
        subprocess.check_call(code("raise SystemExit(2)"))
    except subprocess.CalledProcessError as e:
        show("check_call fails", (e.returncode, e.cmd == code("raise SystemExit(2)")))
    show("call", subprocess.call(code("raise SystemExit(5)")))
    show("getstatusoutput", subprocess.getstatusoutput("echo hi; echo err >&2; exit 3"))
    show("getoutput", subprocess.getoutput("echo one; echo two"))

    # errors
    try:
        subprocess.run(code("pass"), cwd="no-such-dir")
    except FileNotFoundError as e:
        show("missing cwd", (type(e).__name__, e.errno, e.filename))
    show("constants", (PIPE, STDOUT, DEVNULL))
    show(
        "exceptions",
        (
            issubclass(subprocess.CalledProcessError, subprocess.SubprocessError),
            issubclass(subprocess.TimeoutExpired, subprocess.SubprocessError),
        ),
    )


def denied():
    """What a policy denial raises (wasmproc only): a program or shell not
    granted is FileNotFoundError, as a missing one is under CPython."""
    for program in ["cat", "no-such-program"]:
        try:
            subprocess.run([program])
        except FileNotFoundError as e:
            show(f"denied {program}", (type(e).__name__, e.errno, e.filename, e.wasmproc_code))
            print(e)
    try:
        subprocess.getoutput("echo hi")
    except FileNotFoundError as e:
        show("denied shell", (e.errno, e.wasmproc_code))


def main(argv):
    if len(argv) > 2 and argv[2] == "denied":
        denied()
    else:
        conformance(argv[1])
    return 0


if sys.platform == "wasi":
    from componentize_py_types import Err
    from wit_world import exports
    from wit_world.imports import environment

    class Run(exports.Run):
        def run(self) -> None:
            code = main(environment.get_arguments())
            sys.stdout.flush()
            if code:
                raise Err(None)

elif __name__ == "__main__":
    sys.exit(main(sys.argv))
