"""Starting and stopping the tools: detached processes with argument lists, never a shell.

Each process gets its own session (so closing the page or stopping the app does not stop it) and
writes its output into a file. A fine-tune's file starts under <runs>/.launch/ and is named to the
trainer in F5TUNE_CONSOLE; the trainer moves it into the run folder as console.log once the folder
exists. Stopping is SIGTERM to the process holding the run's lock."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from finetune.lock.errors import UserError
from finetune.lock.files import holder
from finetune.runfolder import CONSOLE, CONSOLE_ENV

PENDING = ".launch"  # under the runs root: the output of launches whose run folder does not exist yet


class Job:
    """One started tool: its process and the file its output goes to (from `offset` on)."""

    def __init__(self, argv: list[str], console: Path, append: bool = False, env: dict | None = None,
                 cwd: Path | None = None):
        self.argv, self.console = argv, Path(console)
        # "x": the console file is created here or the start is refused (two launches of one run name)
        mode = "ab" if append else "xb"
        with open(self.console, mode) as out:
            self.offset = out.tell()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, close_fds=True, cwd=cwd,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        threading.Thread(target=self.proc.wait, daemon=True).start()  # reap it whenever it ends

    @property
    def pid(self) -> int:
        return self.proc.pid

    def done(self) -> bool:
        return self.proc.poll() is not None

    def text(self) -> str:
        try:
            with open(self.console, "rb") as f:
                f.seek(self.offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


# a tool's refusal: `error: <message>`, or `error[<code>]: <message>` where the code says what it is about
# (vocab, range, binding, busy, offline, ...): the one place that reads it
REFUSAL = re.compile(r"^error(?:\[(?P<code>[\w.-]+)\])?: (?P<message>.*)$")


def _lines(text: str) -> list[str]:
    return [ln for ln in re.split(r"[\r\n]+", text) if ln.strip()]


def error_line(text: str) -> str:
    """The tool's own one-line refusal, or the end of its output when it died otherwise."""
    lines = _lines(text)
    errors = [ln for ln in lines if REFUSAL.match(ln)]
    if errors:
        return errors[-1]
    return "\n".join(lines[-15:]) or "the process ended without output"


def error_code(line: str) -> str | None:
    """The code of a refusal line (`error[vocab]: ...` -> vocab); None for `error: ...` or any other line."""
    m = REFUSAL.match(line or "")
    return m["code"] if m else None


def progress_line(text: str) -> str:
    """The last line of the output, as a terminal would show it (tqdm redraws its bar with \\r)."""
    lines = _lines(text)
    return lines[-1] if lines else ""


def last_line(text: str, prefix: str) -> str | None:
    lines = [ln.strip() for ln in text.splitlines() if ln.startswith(prefix)]
    return lines[-1][len(prefix):].strip() if lines else None


# ---- fine-tunes ----------------------------------------------------------------------------------------

def _pending_pid(pid_file: Path) -> int | None:
    """The PID of a launch still starting, or None when the one recorded is gone (an app that stopped
    while a launch was starting leaves its files behind)."""
    import psutil

    try:
        pid = int(pid_file.read_text().strip())
        if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def launch_finetune(runs: Path, run_dir: Path, argv: list[str]) -> Job:
    """Start a fine-tune of a new run folder; a second launch of the same name is refused."""
    if run_dir.exists():
        raise UserError(f"run {run_dir.name!r} already exists in {runs}; pick another run name "
                        "(a run folder is never reused; continue that one with Resume)", code="exists")
    pending = runs / PENDING
    pending.mkdir(parents=True, exist_ok=True)
    console, pid_file = pending / f"{run_dir.name}.log", pending / f"{run_dir.name}.pid"
    if console.exists():
        pid = _pending_pid(pid_file)
        if pid is not None:
            raise UserError(f"run {run_dir.name!r} is being launched already (pid {pid}); pick another run name", code="busy")
        console.unlink(missing_ok=True)  # left by a launch whose process is gone
    try:
        job = Job(argv, console, env={CONSOLE_ENV: str(console)})
    except FileExistsError:  # another launch created it between the check and here
        raise UserError(f"run {run_dir.name!r} is being launched already; pick another run name", code="busy")
    pid_file.write_text(f"{job.pid}\n")
    return job


def settle_launch(job: Job, run_dir: Path) -> tuple[str, str]:
    """Where a launch stands: ("started", run folder), ("refused", the error line) or ("starting", progress)."""
    if (run_dir / "manifest.yaml").is_file():
        _clean_pending(job, run_dir, keep_log=True)
        return "started", str(run_dir)
    if job.done():
        text = job.text()
        if (run_dir / "manifest.yaml").is_file():
            _clean_pending(job, run_dir, keep_log=True)
            return "started", str(run_dir)
        _clean_pending(job, run_dir, keep_log=False)
        return "refused", error_line(text)
    return "starting", progress_line(job.text())


def _clean_pending(job: Job, run_dir: Path, keep_log: bool) -> None:
    (job.console.parent / f"{run_dir.name}.pid").unlink(missing_ok=True)
    if not keep_log:  # a refused launch: its one error line is on the page; nothing else is in the file
        job.console.unlink(missing_ok=True)


def stop(run_dir: Path) -> str:
    """SIGTERM to the process holding the run's lock: it finishes its update, saves a checkpoint at it,
    records `stopped` and exits."""
    who = holder(run_dir)
    if not who:
        raise UserError(f"run {run_dir.name!r} is not running (no process holds {run_dir}/.lock)", code="app")
    m = re.fullmatch(r"pid (\d+) on (.+)", who)
    if not m:
        raise UserError(f"run {run_dir.name!r} is held by {who}, which names no PID; stop it where it runs", code="app")
    pid, host = int(m[1]), m[2]
    if host != socket.gethostname():
        raise UserError(f"run {run_dir.name!r} runs on {host}, not here ({socket.gethostname()}); stop it there", code="app")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise UserError(f"run {run_dir.name!r}: pid {pid} has just ended", code="app")
    return f"sent SIGTERM to pid {pid}: the run finishes its current update, saves a checkpoint there and stops"


def launch_resume(run_dir: Path, argv: list[str]) -> Job:
    who = holder(run_dir)
    if who:
        raise UserError(f"run {run_dir.name!r} is running ({who}); stop it before resuming", code="busy")
    return Job(argv, run_dir / CONSOLE, append=True)


def settle_resume(job: Job, run_dir: Path) -> tuple[str, str]:
    """("started", ...) once the resumed process trains (its status says running under its own PID: every
    check of a resume comes before that, while it already holds the lock), ("finished", ...), ("refused",
    the error line) or ("starting", ...)."""
    from finetune.runfolder import read_status

    if job.done():
        text = job.text()
        if job.proc.returncode == 0:
            return "finished", progress_line(text)
        return "refused", error_line(text)
    status = read_status(run_dir) or {}
    if status.get("state") == "running" and status.get("pid") == job.pid:
        return "started", f"pid {job.pid}"
    return "starting", ""


# ---- short tools: synthesis and export in this process, preparation detached ----------------------------

_INFER = threading.Lock()  # one at a time: sampling seeds torch's process-wide RNG
# what the first synthesis would otherwise import while the user waits (seconds on a small CPU)
WARM = ("infer.synth", "infer.export", "f5_tts.model.cfm", "f5_tts.model.backbones.dit",
        "f5_tts.model.backbones.unett", "finetune.media.vocoder")


def warm_up() -> None:
    """Import, in a background thread, what synthesis and export need."""
    from importlib import import_module

    def load():
        for name in WARM:
            import_module(name)

    threading.Thread(target=load, daemon=True).start()


def infer_here(argv: list[str]) -> Path:
    """`python -m infer ...` through the tool's own entry point (infer.__main__.run) in this process: the
    same argument list, parsing, checks and one-line refusals (UserError), without starting a process that
    imports torch and f5-tts again for every click (seconds each). Returns the file written."""
    from infer.__main__ import run

    module = argv.index("infer")  # argv as commands.infer_args / export_args build it
    with _INFER:
        return Path(run(argv[module + 1:]))


def scratch() -> Path:
    """A folder for one tool's output file (outside every run folder)."""
    return Path(tempfile.mkdtemp(prefix="f5tune-app-"))


def run_tool(argv: list[str], cwd: Path, poll: float = 0.3):
    """Start a tool detached in `cwd` and follow it: yields ("running", its progress: the state its bars report
    through F5TUNE_PROGRESS, or None before the first) while it runs, then ("done", its whole output) or
    ("refused", its error line). A model named by a hub id is looked for as a folder relative to `cwd` first:
    the pages pass data_root, where Roots.model checked for one."""
    from finetune.media.progress import ENV, read

    folder = scratch()
    job = Job(argv, folder / "output.log", cwd=cwd, env={ENV: str(folder / "progress.json")})
    try:
        while not job.done():
            yield "running", read(folder / "progress.json")
            time.sleep(poll)
        text = job.text()
    finally:  # the output is on the page now (or nobody is watching): only the tool's own files stay
        shutil.rmtree(folder, ignore_errors=True)
    yield ("done", text) if job.proc.returncode == 0 else ("refused", error_line(text))
