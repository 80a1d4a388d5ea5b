"""A real 2-process fine-tune on CPU (torchrun, gloo) against a single-process one with the same global batch."""
import os
import subprocess
import sys

import pytest
import torch
import yaml

from finetune.lock.checkpoints import header, list_checkpoints, load_weights
from finetune.lock.errors import UserError
from finetune.lock.files import KILL_AT
from finetune.train import SHARDED_ENGINES, make_accelerator
from tests.conftest import OFFLINE, REPO, TINY, assert_user_error, cli, finetune


def torchrun(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "finetune",
                           *args], cwd=REPO, env={**os.environ, **OFFLINE, **(env or {})}, capture_output=True,
                          text=True, timeout=600)


def lrs(run) -> list[str]:
    return [line.split(" lr ")[1].split()[0] for line in (run / "train.log").read_text().splitlines()
            if line.startswith("update ")]


def test_two_processes_write_one_run_and_resume_exactly(tmp_path):
    # demo clips are 500 and 634 frames: 2000 frames puts both in one batch, 700 gives one clip per batch,
    # so one process on 2000 and two processes on 700 each see both clips per update
    common = ["train.max_updates=null", "train.epochs=3", "train.save_every=1", "train.log_every=1"]
    single = finetune(tmp_path, "single", "f5tts_tiny", *common, "data.frames_per_batch=2000")
    ddp = ["model=f5tts_tiny", f"run.root={tmp_path}", *TINY, *common, "data.frames_per_batch=700"]
    r = torchrun(*ddp, "run.name=ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("run: ") == 1
    run = tmp_path / "ddp"

    assert sorted(list_checkpoints(run)) == sorted(list_checkpoints(single)) == [1, 2, 3]
    assert lrs(run) == lrs(single) and len(lrs(run)) == 3  # the schedule counts updates, not processes
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert files == [f"{kind}_{u:08d}.{ext}" for kind, ext in (("model", "safetensors"), ("state", "pt"))
                     for u in (1, 2, 3)]
    assert [p.name for p in run.glob("manifest*")] == ["manifest.yaml"]
    manifest = yaml.safe_load((run / "manifest.yaml").read_text())
    for update, path in list_checkpoints(run).items():
        assert header(path)[1] == {"format": "f5tune-ckpt/1", "manifest_sha256": manifest["sha256"], "run": "ddp",
                                   "update": str(update)}
        assert load_weights(path, "online").keys() == load_weights(path, "ema").keys()
    assert (run / "train.log").read_text().count("done:") == 1
    r = cli("infer", f"run={run}", "nfe_step=2")
    assert r.returncode == 0, r.stderr[-3000:]

    # killed while rank 0 writes checkpoint 2, resumed from 1 on 2 processes: after update 1 the ranks' RNGs
    # differ (one drew noise for 500 frames, the other for 634), so each must get its own back
    killed = tmp_path / "killed"
    assert torchrun(*ddp, "run.name=killed", env={KILL_AT: "model_00000002.safetensors"}).returncode != 0
    assert sorted(list_checkpoints(killed)) == [1]
    r = torchrun(f"resume={killed}")
    assert r.returncode == 0, r.stderr[-3000:]
    for w in ("online", "ema"):
        want, got = load_weights(list_checkpoints(run)[3], w), load_weights(list_checkpoints(killed)[3], w)
        assert all(torch.equal(want[k], got[k]) for k in want), w


@pytest.mark.parametrize("var", sorted(SHARDED_ENGINES))
def test_sharded_engines_are_refused(var, monkeypatch):
    monkeypatch.setenv(var, "true")
    with pytest.raises(UserError, match=SHARDED_ENGINES[var]):
        make_accelerator({"train": {"mixed_precision": "no"}, "optim": {"grad_accumulation_steps": 1}})


def test_fsdp_launch_fails_before_the_run_folder(tmp_path, monkeypatch):
    # what `accelerate launch --use_fsdp` sets in each process; accelerate itself only honours it on GPUs
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    r = cli("finetune", "model=f5tts_tiny", f"run.root={tmp_path}", "run.name=sharded", *TINY)
    assert_user_error(r, "FSDP is not supported", "--multi_gpu")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "sharded").exists()
