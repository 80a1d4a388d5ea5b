"""Crash safety: kill -9 a fine-tune (between saves, inside a save, before its first save), or stop it with
SIGTERM, resume it, and get the uninterrupted run's weights bit for bit. One writer per run folder."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from finetune.lock.checkpoints import list_checkpoints, load_weights
from finetune.lock.errors import UserError
from finetune.lock.files import KILL_AT
from tests import preloaded
from tests.conftest import OFFLINE, REPO, TINY, finetune

LONG = ["train.max_updates=24", "train.save_every=4"]


def start(root, name, *extra, env=None):
    args = [sys.executable, "-m", "finetune", "model=f5tts_tiny", f"run.root={root}", f"run.name={name}", *TINY, *LONG,
            *extra]
    return preloaded.Popen(args, cwd=REPO, env={**os.environ, **OFFLINE, **(env or {})},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(proc, condition, what):
    deadline = time.time() + 120
    while time.time() < deadline and not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-2000:]}"
        time.sleep(0.005)


def resume(run, *overrides):
    from finetune.__main__ import run as run_command

    return run_command([f"resume={run}", *overrides])[1]


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


@pytest.fixture(scope="module")
def final(tmp_path_factory):
    """EMA and online weights of the uninterrupted run."""
    reference = finetune(tmp_path_factory.mktemp("reference"), "reference", "f5tts_tiny", *LONG)
    return {w: load_weights(list_checkpoints(reference)[24], w) for w in ("ema", "online")}


def assert_final(run, final, label):
    for w in ("ema", "online"):
        assert same(load_weights(list_checkpoints(run)[24], w), final[w]), (label, w)


def test_kill_between_saves_and_resume_is_exact(tmp_path, final, capsys):
    run = tmp_path / "killed"
    proc = start(tmp_path, run.name)
    wait_for(proc, lambda: 12 in list_checkpoints(run), "checkpoint 12")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = max(list_checkpoints(run))
    assert 12 <= saved < 24
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "running" and status["pid"] == proc.pid  # what a reader turns into `interrupted`
    resume(run)
    assert f"from update {saved}" in capsys.readouterr().err  # nothing lost beyond the last complete save
    assert_final(run, final, saved)


def test_kill_inside_a_checkpoint_write_loses_nothing_saved(tmp_path, final, capsys):
    """Killed deterministically halfway through writing the weights of 12, then the training state of 16."""
    for victim, survivor in (("model_00000012.safetensors", 8), ("state_00000016.pt", 12)):
        run = tmp_path / victim
        assert start(tmp_path, run.name, env={KILL_AT: victim}).wait(timeout=300) == -signal.SIGKILL
        assert max(list_checkpoints(run)) == survivor  # the half-written file is under no checkpoint's name
        assert [p.name for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name] != []
        resume(run)
        assert f"from update {survivor}" in capsys.readouterr().err
        assert_final(run, final, victim)
        assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]  # resume swept it away


def test_killed_before_its_first_save_starts_again_from_update_0(tmp_path, final, capsys):
    """With nothing saved, the manifest holds all it takes: resume starts from update 0 (it used to be
    neither resumable, "no intact checkpoint", nor restartable, "already exists")."""
    run = tmp_path / "early"
    assert start(tmp_path, run.name, env={KILL_AT: "model_00000004.safetensors"}).wait(timeout=300) == -signal.SIGKILL
    assert list_checkpoints(run) == {}
    resume(run)
    assert "from update 0" in capsys.readouterr().err
    assert_final(run, final, "before the first save")


def test_sigterm_stops_with_a_checkpoint_and_resume_finishes_exactly(tmp_path, final):
    run = tmp_path / "stopped"
    proc = start(tmp_path, run.name, "train.log_every=1")
    wait_for(proc, lambda: (run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 6,
             "update 6")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped" and status["update"] < 24
    assert max(list_checkpoints(run)) == status["update"]  # a checkpoint at the update it reached
    assert resume(run)["state"] == "finished"
    assert_final(run, final, "stopped")


def test_one_writer_per_run_folder(tmp_path):
    """A resume of a run that is still training is refused naming the holder; the live run is untouched."""
    run = tmp_path / "live"
    proc = start(tmp_path, run.name, "train.max_updates=400", "train.save_every=1000")
    try:
        # after its first log line: from there it adds no file before its final save at 400
        wait_for(proc, lambda: (run / "metrics.jsonl").is_file() and (run / "train.log").is_file(), "its first log")
        before = sorted(p.name for p in run.rglob("*")), (run / "manifest.yaml").read_bytes()
        with pytest.raises(UserError, match=f"in use by pid {proc.pid} on .*resume needs it alone"):
            resume(run, "train.max_updates=500")
        assert (sorted(p.name for p in run.rglob("*")), (run / "manifest.yaml").read_bytes()) == before
    finally:
        proc.kill()
        proc.wait()
    resume(run, "train.max_updates=2")  # the lock died with its holder


def test_adamw8bit_trains_resumes_and_cannot_be_swapped(tmp_path):
    pytest.importorskip("bitsandbytes")
    run = finetune(tmp_path, "bnb", "f5tts_tiny", "optim.name=adamw8bit", "train.max_updates=2")
    assert resume(run, "train.max_updates=3")["updates"] == 3
    with pytest.raises(UserError, match="optim.name: adamw8bit -> adamw"):
        resume(run, "optim.name=adamw", "train.max_updates=4")
