"""Crash safety: kill -9 a fine-tune, resume it, and get the uninterrupted run's weights bit for bit."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from finetune.lock.checkpoints import list_checkpoints, load_weights
from finetune.lock.files import KILL_AT
from tests.conftest import OFFLINE, REPO, TINY, cli, finetune

LONG = ["train.max_updates=24", "train.save_every=4"]


def start(root, name, env=None):
    args = [sys.executable, "-m", "finetune", "model=f5tts_tiny", f"run.root={root}", f"run.name={name}", *TINY, *LONG]
    return subprocess.Popen(args, cwd=REPO, env={**os.environ, **OFFLINE, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_after(proc, run, update):
    """SIGKILL as soon as checkpoint `update` is on disk: the run is mid-update or mid-write."""
    deadline = time.time() + 120
    while time.time() < deadline and update not in list_checkpoints(run):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


@pytest.fixture(scope="module")
def final(tmp_path_factory):
    """EMA and online weights of the uninterrupted run."""
    reference = finetune(tmp_path_factory.mktemp("reference"), "reference", "f5tts_tiny", *LONG)
    return {w: load_weights(list_checkpoints(reference)[24], w) for w in ("ema", "online")}


def test_kill_and_resume_is_exact(tmp_path, final):
    for point in (4, 12):
        run = tmp_path / f"killed-at-{point}"
        kill_after(start(tmp_path, run.name), run, point)
        saved = max(list_checkpoints(run))
        assert 0 < saved < 24
        r = cli("finetune", f"resume={run}")
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"from update {saved}" in r.stderr  # nothing lost beyond the last complete save
        for w in ("ema", "online"):
            assert same(load_weights(list_checkpoints(run)[24], w), final[w]), (point, w)


def test_kill_inside_a_checkpoint_write_loses_nothing_saved(tmp_path, final):
    """Killed deterministically halfway through writing the weights of 12, then the training state of 16."""
    for victim, survivor in (("model_00000012.safetensors", 8), ("state_00000016.pt", 12)):
        run = tmp_path / victim
        proc = start(tmp_path, run.name, {KILL_AT: victim})
        assert proc.wait(timeout=300) == -signal.SIGKILL
        assert max(list_checkpoints(run)) == survivor  # the half-written file is under no checkpoint's name
        assert [p.name for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name] != []
        r = cli("finetune", f"resume={run}")
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"from update {survivor}" in r.stderr
        for w in ("ema", "online"):
            assert same(load_weights(list_checkpoints(run)[24], w), final[w]), (victim, w)
        assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]  # resume swept it away


def test_adamw8bit_trains_resumes_and_cannot_be_swapped(tmp_path):
    run = finetune(tmp_path, "bnb", "f5tts_tiny", "optim.name=adamw8bit", "train.max_updates=2")
    r = cli("finetune", f"resume={run}", "train.max_updates=3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert max(list_checkpoints(run)) == 3
    r = cli("finetune", f"resume={run}", "optim.name=adamw", "train.max_updates=4")
    assert r.returncode != 0 and "optim.name: adamw8bit -> adamw" in r.stderr and "Traceback" not in r.stderr
