import gc
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import preloaded

REPO = Path(__file__).resolve().parents[1]
# Nothing in the suite may reach the hub or prompt for a wandb login.
OFFLINE = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
os.environ.update(OFFLINE)  # in-process tests too; set before anything imports huggingface_hub
# One intra-op thread per process, in-process and in every tool the tests start: the suite runs two workers,
# each starting trainers, on as many cores, and torch's default of a thread per core made every process
# spin against the others (test_resume, test_distributed and test_same_math took 5 min 10 s on 2 cores
# with it, 1 min 23 s without). Tiny models gain nothing from more threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
TINY = ["experiment=demo", "pretrained=null", "train.max_updates=4", "train.save_every=2"]


def cli(module: str, *args: str, env=None, fresh=False) -> subprocess.CompletedProcess:
    """A command in its own process: for what only a process shows (exit status, the `error:` line, signals).
    Forked from the preloaded server (tests/preloaded.py), or, `fresh`, started as the user starts it."""
    start = subprocess.run if fresh else preloaded.run
    return start([sys.executable, "-m", module, *args], cwd=REPO, env={**os.environ, **OFFLINE, **(env or {})},
                 capture_output=True, text=True, timeout=600)


def finetune(root: Path, name: str, model: str, *extra: str) -> Path:
    """A tiny fine-tune in this process (python -m finetune's own code path); returns the run folder."""
    from finetune.__main__ import run

    run_dir, _ = run([f"model={model}", f"run.root={root}", f"run.name={name}", *TINY, *extra])
    assert run_dir == Path(root) / name
    return run_dir


def infer(*args: str) -> Path:
    """python -m infer's code path in this process: the wav (or exported file) written."""
    from infer.__main__ import run

    return run(list(args))


ERROR_LINE = re.compile(r"error\[(?P<code>[a-z]+)\]: ")


def in_background(pid: int) -> None:
    """A trainer that a test keeps running until it signals it yields the CPU to the rest of the suite: the test
    needs it to go on updating, not to go fast, and at full speed it took a core for the test's whole length.
    (Every thread: on Linux a thread has a priority of its own.)"""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.setpriority(os.PRIO_PROCESS, int(tid), 10)


def error_lines(stderr: str, code: str | None = None) -> list[str]:
    """The `error[<code>]: ...` lines of a tool's output (of that code, when given)."""
    return [line for line in stderr.splitlines()
            if (m := ERROR_LINE.match(line)) and (code is None or m.group("code") == code)]


def assert_user_error(r: subprocess.CompletedProcess, *needles: str, code: str | None = None) -> str:
    """A refusal from a CLI: exit status 2, one `error[<code>]:` line naming the problem, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = error_lines(r.stderr)
    assert len(errors) == 1, r.stderr[-3000:]
    if code:
        assert ERROR_LINE.match(errors[0]).group("code") == code, errors[0]
    for needle in needles:
        assert needle in errors[0], (needle, r.stderr[-3000:])
    return errors[0]


def tree(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """One tiny fine-tune per family, shared by the tests that only read them (copy before changing one:
    the session ends with a check that nothing in them changed)."""
    root = tmp_path_factory.mktemp("runs")
    shared = {"f5": finetune(root, "f5", "f5tts_tiny"), "e2": finetune(root, "e2", "e2tts_tiny")}
    before = tree(root)
    yield shared
    assert tree(root) == before, "a test wrote into the shared runs: copy them first (shutil.copytree)"


def pytest_configure(config):
    """Under pytest-xdist, the controller starts the preloaded server its workers share, before it starts them."""
    if getattr(config.option, "numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        preloaded.start_shared()


@pytest.hookimpl(wrapper=True)  # the groups are set before xdist reads them
def pytest_collection_modifyitems(items):
    """A module's tests that share a module-scoped fixture run on one xdist worker (--dist loadgroup), so the
    fixture is made once, not once per worker (test_same_math's two training processes were made twice)."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        info = getattr(item, "_fixtureinfo", None)  # pytest keeps no public map from a test to its fixtures
        defs = [d for ds in info.name2fixturedefs.values() for d in ds] if info else []
        if any(d.scope == "module" for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    return (yield)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    """What outlives a test (imports, caches, module-scoped fixtures) is out of the collector's sight for the
    rest of the session: the garbage a test left is collected once, then the survivors are frozen, so no full
    collection walks torch's, f5-tts's and gradio's objects again (collections took about a tenth of a
    worker's time in-process)."""
    gc.collect()
    gc.freeze()
