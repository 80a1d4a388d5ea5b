"""Real 2-process fine-tunes on CPU (gloo): against a single process with the same global batch, killed and
resumed exactly, and two "machines" that share no storage (each process in its own working folder). torchrun
and the workers it starts are forked from tests/preloaded.py's server (each worker skips importing torch)."""
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from finetune.lock.checkpoints import header, list_checkpoints, load_weights
from finetune.lock.errors import UserError
from finetune.lock.files import KILL_AT
from finetune.train import SHARDED_ENGINES, make_accelerator
from tests import preloaded
from tests.conftest import OFFLINE, REPO, TINY, finetune, infer


WORKERS = "torch.distributed.elastic.multiprocessing.subprocess_handler.subprocess_handler:Popen"


def torchrun(*args: str, env=None) -> subprocess.CompletedProcess:
    return preloaded.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "finetune",
                          *args], cwd=REPO, env={**os.environ, **OFFLINE, preloaded.SWAP: WORKERS, **(env or {})},
                         capture_output=True, text=True, timeout=600)


def lrs(run) -> list[float]:
    return [yaml.safe_load(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]


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
        meta = header(path)[1]
        assert (meta["manifest_sha256"], meta["run"], meta["update"]) == (manifest["sha256"], "ddp", str(update))
        assert load_weights(path, "online").keys() == load_weights(path, "ema").keys()
    assert (run / "train.log").read_text().count("done:") == 1
    assert infer(f"run={run}", "nfe_step=2").is_file()

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


def two_machines(tmp_path, *args) -> list[subprocess.CompletedProcess]:
    """Two processes of one job, each in its own working folder: what two machines without shared storage see
    of a relative run.root. Started by hand with torch.distributed's environment (torchrun gives both one cwd)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        cwd = tmp_path / f"machine{rank}"
        cwd.mkdir(exist_ok=True)
        env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"}
        procs.append(preloaded.Popen([sys.executable, "-m", "finetune", *args], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]


def test_start_needs_no_shared_storage_and_resume_says_it_does(tmp_path):
    """Rank 0 alone writes the run folder and hands the manifest to the others, so a fresh run starts
    across machines that share nothing; a resume reads the folder everywhere, and says so on every rank
    instead of leaving the others waiting in a collective forever."""
    args = ["model=f5tts_tiny", "run.root=runs", "run.name=apart", *TINY, "data.frames_per_batch=700"]
    results = two_machines(tmp_path, *args)
    assert [r.returncode for r in results] == [0, 0], results[1].stderr[-3000:]
    assert list_checkpoints(tmp_path / "machine0" / "runs" / "apart").keys() == {2, 4}
    assert not (tmp_path / "machine1" / "runs").exists()
    results = two_machines(tmp_path, "resume=runs/apart", "train.max_updates=6")
    for r in results:
        assert r.returncode == 2, r.stderr[-3000:]
        assert "(rank 1)" in r.stderr and "storage they all share" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("var", sorted(SHARDED_ENGINES))
def test_sharded_engines_are_refused(var, monkeypatch):
    monkeypatch.setenv(var, "true")
    with pytest.raises(UserError, match=SHARDED_ENGINES[var]):
        make_accelerator({"train": {"mixed_precision": "no"}, "optim": {"grad_accumulation_steps": 1}})


def test_fsdp_launch_fails_before_the_run_folder(tmp_path, monkeypatch):
    # what `accelerate launch --use_fsdp` sets in each process; accelerate itself only honours it on GPUs
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(UserError, match="FSDP is not supported.*--multi_gpu"):
        finetune(tmp_path, "sharded", "f5tts_tiny")
    assert not (tmp_path / "sharded").exists()


@pytest.mark.parametrize("ending, status, printed", [(None, 0, ""), (SystemExit(2), 2, ""), (SystemExit(None), 0, ""),
                                                     (SystemExit("stopped"), 1, "stopped"),
                                                     (RuntimeError("boom"), 1, "RuntimeError: boom")])
def test_a_distributed_process_leaves_with_the_status_python_would_give(ending, status, printed, monkeypatch, capsys):
    from finetune.__main__ import leave

    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    leave(ending)
    assert exits == [status]
    assert printed in capsys.readouterr().err
