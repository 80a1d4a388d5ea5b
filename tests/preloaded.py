"""Python tools started by the tests (the benchmarks' smoke cases and the app under browser test too), forked
from a server that has already imported torch, f5-tts and this project instead of started afresh: each
`python -m finetune` spends about 3 of its 4.5 CPU-seconds importing them, and the suite starts dozens.

A tool keeps what a test checks of it: a process of its own (its pid, exit status and signals, a session of
its own if asked), its argv, environment and working folder, its stdout and stderr, and the code path of
`python -m module`, `python script.py` or `python -c code`. What it does not get is the interpreter's own
start-up and the reading of the environment at import: a test that checks those starts a process itself
(`subprocess`, as test_pipeline does for a plain CLI run and for the hub's offline setting).

`Popen` and `run` take subprocess's arguments for `[sys.executable, ...]`, and this module has subprocess's
names, so a module that calls `subprocess.run` can be given this one instead. Inside the tools, SWAP (an
environment variable of `module:name` pairs) does that: in each tool forked with it, and in the tools those start
(they inherit it), each such name is made this module (`subprocess`) or its namesake here (`Popen`), so that a
launcher's workers are forked too (torchrun's, submitit's, the app's). The server (this file run as
`python -m tests.preloaded SOCKET`) listens on a Unix socket; for each tool it forks a watcher, which forks
the tool, sends back its pid, waits for it and sends back how it ended."""
import atexit
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from subprocess import DEVNULL, PIPE, STDOUT, CalledProcessError, CompletedProcess, TimeoutExpired  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what the tools the tests start import first (each brings most of the rest)
# (not the modules run as __main__: runpy runs those afresh, and warns when they are loaded already)
PRELOAD = ("torch", "accelerate", "hydra", "f5_tts.model", "finetune.config", "finetune.runs", "finetune.train",
           "finetune.prepare_schema", "finetune.prepare", "finetune.lock.load", "infer.config", "infer.synth",
           "transformers.pipelines", "finetune.app.ui")
_server: subprocess.Popen | None = None
SOCKET = ""  # the server's socket; set in the tools it forks, so that those start theirs through it too
SWAP = "PRELOADED_SWAP"
SHARED = "PRELOADED_SOCKET"  # a server the test session's controller started for its xdist workers (start_shared)


def _start(path: str) -> subprocess.Popen:
    global _server
    _server = subprocess.Popen([sys.executable, "-m", "tests.preloaded", path], cwd=REPO, stdout=PIPE)
    atexit.register(_server.kill)
    return _server


def start_shared() -> None:
    """Start one server for the workers this process is about to start (they inherit SHARED), without waiting for
    it: they wait at their first tool, which they reach after collecting. One server, not one per worker, imports
    torch, f5-tts and gradio (8 CPU-seconds)."""
    path = os.path.join(tempfile.mkdtemp(prefix="preloaded-"), "socket")
    server = _start(path)

    def failed():  # tells the workers at once, not after their wait
        if server.stdout.readline() != b"ready\n":
            open(path + ".failed", "w").close()

    threading.Thread(target=failed, daemon=True).start()
    os.environ[SHARED] = path


def _address() -> str:
    """The server's socket: the shared one (once it listens), or one started for this process at its first tool
    (it inherits this environment)."""
    global SOCKET
    if SOCKET and (_server is None or _server.poll() is None):
        return SOCKET
    shared = os.environ.get(SHARED)
    if shared:
        deadline = time.monotonic() + 300
        while not os.path.exists(shared):  # the server moves its socket there once it listens
            if os.path.exists(shared + ".failed") or time.monotonic() > deadline:
                raise RuntimeError(f"the shared preloaded server ({shared}) did not start: see its output above")
            time.sleep(0.1)
        SOCKET = shared
        return shared
    path = os.path.join(tempfile.mkdtemp(prefix="preloaded-"), "socket")
    if _start(path).stdout.readline() != b"ready\n":
        raise RuntimeError(f"the preloaded server did not start (exit status {_server.wait()})")
    SOCKET = path
    return path


class _Captured:
    """A PIPE's stand-in: a file the tool writes; read() is what it wrote so far (all of it once it ended)."""

    def __init__(self, text: bool):
        self.file, self.text = tempfile.TemporaryFile(), text

    def read(self):
        fd = self.file.fileno()
        data = os.pread(fd, os.fstat(fd).st_size, 0)  # the tool shares the file offset: read from the start
        return data.decode(errors="replace") if self.text else data


def _fd(target, null: int, default: int, captured: _Captured | None) -> int:
    """The descriptor a tool's stdout or stderr goes to: None (this process's), DEVNULL, PIPE or an open file."""
    if captured:
        return captured.file.fileno()
    return default if target is None else null if target == DEVNULL else target.fileno()


class Popen:
    def __init__(self, args, cwd=None, env=None, stdin=None, stdout=None, stderr=None, text=False, encoding=None,
                 start_new_session=False, close_fds=True, shell=False):  # forked with its three descriptors only
        if shell or args[0] != sys.executable or stdin not in (None, DEVNULL):
            raise ValueError(f"only Python tools without input are forked here: {args[:3]}")
        text = text or encoding is not None
        self.args, self.returncode, self._buffer, self._lock = list(args), None, b"", threading.Lock()
        self.stdout = _Captured(text) if stdout == PIPE else None
        self.stderr = _Captured(text) if stderr == PIPE else None
        null = os.open(os.devnull, os.O_RDWR)
        out = _fd(stdout, null, 1, self.stdout)
        err = out if stderr == STDOUT else _fd(stderr, null, 2, self.stderr)
        request = {"args": self.args, "cwd": os.path.abspath(cwd or os.getcwd()),
                   "env": dict(os.environ if env is None else env), "new_session": start_new_session}
        body = json.dumps(request).encode()
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(_address())
        socket.send_fds(self._conn, [len(body).to_bytes(8, "little")], [null, out, err])
        self._conn.sendall(body)
        os.close(null)
        self.pid = int(self._line())

    def _line(self, timeout=None) -> bytes:
        self._conn.settimeout(timeout)
        while b"\n" not in self._buffer:
            chunk = self._conn.recv(64)
            if not chunk:
                raise RuntimeError("the preloaded server's watcher went away")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def wait(self, timeout=None) -> int:
        # another thread may be waiting too (the app reaps each tool in a thread of its own): one reads the status
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._lock.acquire(timeout=-1 if timeout is None else timeout):
            try:
                if self.returncode is None:
                    self.returncode = int(self._line(None if deadline is None else max(0, deadline - time.monotonic())))
                    self._conn.close()
            except (TimeoutError, BlockingIOError):  # BlockingIOError: no status yet, at timeout 0
                pass
            finally:
                self._lock.release()
        if self.returncode is None:
            raise TimeoutExpired(self.args, timeout)
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except TimeoutExpired:
            return None

    def communicate(self, timeout=None):
        self.wait(timeout)
        return (self.stdout.read() if self.stdout else None), (self.stderr.read() if self.stderr else None)

    def send_signal(self, sig) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # ended, and reaped by its watcher already: its status is on its way
                pass

    def kill(self) -> None:
        self.send_signal(9)

    def terminate(self) -> None:
        self.send_signal(15)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.wait()


def run(args, capture_output=False, timeout=None, check=False, text=False, stdout=None, stderr=None,
        **kwargs) -> CompletedProcess:
    if capture_output:
        stdout = stderr = PIPE
    proc = Popen(args, stdout=stdout, stderr=stderr, text=text, **kwargs)
    try:
        out, err = proc.communicate(timeout)
    except TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    if check and proc.returncode:
        raise CalledProcessError(proc.returncode, args, out, err)
    return CompletedProcess(args, proc.returncode, out, err)


# ---- the server ------------------------------------------------------------------------------------------

def _serve(path: str) -> None:
    import gc
    import importlib
    import signal

    import tests.preloaded as client  # the module the tools import: they reach this server through it

    client.SOCKET = path
    for name in PRELOAD:
        importlib.import_module(name)
    importlib.import_module("finetune.slicing").warm_up()  # librosa's compiled functions, for each tool that slices
    assert threading.active_count() == 1, "a preloaded import started a thread: a fork would not have it"
    # what is loaded now is never garbage: out of the collector's sight, in this server and in every tool forked
    # from it. Otherwise each tool's exit walks all of it (800k objects) and copies the pages it touches: 2.2 of
    # a forked `python -c pass`'s 2.4 CPU-seconds, 0.5 with this.
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the watchers are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".starting")
    listener.listen(16)
    os.rename(path + ".starting", path)  # a client waiting for the path finds a server that listens
    listener.settimeout(1.0)
    parent = os.getppid()
    print("ready", flush=True)
    while os.getppid() == parent:  # the tests' process ended: so does this
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        header, fds, _, _ = socket.recv_fds(conn, 8, 3)
        body = b""
        while len(body) < int.from_bytes(header, "little"):
            body += conn.recv(1 << 20)
        request = json.loads(body)
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            listener.close()
            _watch(conn, request, fds)  # returns only in the tool's process
            return
        conn.close()
        for fd in fds:
            os.close(fd)


def _watch(conn: socket.socket, request: dict, fds: list[int]) -> None:
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become(request, fds)
        return
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(b"%d\n" % pid)
        _, status = os.waitpid(pid, 0)
        conn.sendall(b"%d\n" % os.waitstatus_to_exitcode(status))
    except OSError:  # the process that started the tool has gone (an app stopped while its tools run on)
        pass
    os._exit(0)


def _become(request: dict, fds: list[int]) -> None:
    """This process as `python ARGS` started in the request's folder and environment; the tool runs here, and
    returning (or an exception or SystemExit) ends the process the way the interpreter ends one."""
    import importlib
    import random
    import runpy
    import types

    import numpy as np

    import tests.preloaded as client  # (this file is __main__ here)

    if request["new_session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    random.seed()  # a new process draws new seeds
    np.random.seed()
    options, args = set(), request["args"][1:]
    while args[0] in ("-P", "-u"):  # -P: nothing prepended to sys.path for the script or module (the app's tools)
        options.add(args.pop(0))
    if "-u" in options:
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    isolated = "-P" in options
    flag, *rest = args
    # sys.path as the interpreter would make it: the script's folder or the working one, then PYTHONPATH
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    base = [p for p in sys.path[1:] if p not in extra]
    if flag.startswith("-") and flag not in ("-m", "-c"):
        raise SystemExit(f"tests/preloaded.py: python {flag} is not forked here")
    first = os.getcwd() if flag == "-m" else "" if flag == "-c" else os.path.dirname(os.path.abspath(flag))
    sys.path[:] = ([] if isolated else [first]) + extra + base
    for pair in filter(None, os.environ.get(SWAP, "").split(",")):
        module, name = pair.split(":")
        setattr(importlib.import_module(module), name, client if name == "subprocess" else getattr(client, name))
    if flag == "-m":
        module, *argv = rest
        sys.argv = [module, *argv]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    elif flag == "-c":
        code, *argv = rest
        sys.argv = ["-c", *argv]
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(code, "<string>", "exec"), main.__dict__)
    else:
        sys.argv = [flag, *rest]
        runpy.run_path(flag, run_name="__main__")


if __name__ == "__main__":
    _serve(sys.argv[1])
