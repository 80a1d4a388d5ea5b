"""Sweeps through Hydra's submitit launchers: one locked run per job. On this machine through submitit's local
executor (real job processes, stopped by the executor's signals); SLURM as far as it goes without a cluster: the
submission script that the slurm_gpu preset makes, run as a node would run it (a stand-in sbatch and srun start
its tasks with SLURM's variables), and the torch.distributed environment each task derives from them."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from finetune.cluster import check_launcher, distributed_env, job_environment, join_processes
from finetune.lock.checkpoints import list_checkpoints, load_train_state, state_path
from finetune.lock.errors import UserError
from finetune.lock.load import load_run
from finetune.runfolder import read_status
from finetune.sweep import JOBS, earlier_run, jobs, read_record, record_path, table, write_record
from tests import preloaded
from tests.conftest import OFFLINE, REPO, TINY, assert_user_error, cli, in_background, infer


# the local executor's controllers and their tasks are forked from tests/preloaded.py's server too
JOBS_FORKED = "submitit.local.local:subprocess"


def sweep(*args: str, env=None, timeout=300) -> subprocess.CompletedProcess:
    """python -m finetune -m ... in a session of its own, so that the jobs its launcher starts (submitit's
    controllers survive the process that submitted them) end with it if the test fails."""
    p = preloaded.Popen([sys.executable, "-m", "finetune", "-m", *args], cwd=REPO, text=True, start_new_session=True,
                        env={**os.environ, **OFFLINE, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        _end_session(p)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _end_session(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(what: str, check, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def printed_table(stdout: str) -> list[str]:
    """The sweep's table as its process printed it at the end: from its `sweep <folder>: N jobs` line on."""
    lines = stdout.splitlines()
    return lines[next(i for i, line in enumerate(lines) if re.fullmatch(r"sweep .*: \d+ jobs?", line)):]


def verified(run: Path) -> None:
    for weights in ("ema", "online"):
        load_run(run, "last", weights)  # manifest hash, builder, binding, strict load, tensor hashes


def test_submitit_local_sweep_one_locked_run_per_job_stopped_by_the_executor_and_resumed(tmp_path):
    """Two jobs through hydra/launcher=submitit_local, in processes of their own: job 0 trains to its end; job 1 gets
    submitit's preemption signal (USR2), saves a checkpoint there, is requeued by submitit and resumes its run by
    itself; then SIGTERM through the executor (its controller forwards it) stops it with a checkpoint, and
    `resume=` continues it."""
    p = preloaded.Popen([sys.executable, "-m", "finetune", "-m", "hydra/launcher=submitit_local", "model=f5tts_tiny",
                         "experiment=demo", "pretrained=null", "train.log_every=1", "train.save_every=1000",
                         f"run.root={tmp_path}", "train.max_updates=4,100000"], cwd=REPO, text=True,
                        start_new_session=True, env={**os.environ, **OFFLINE, preloaded.SWAP: JOBS_FORKED},
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        sweep_dir = wait_for("the sweep folder", lambda: next((tmp_path / "sweeps").glob("*/multirun.yaml"), None)).parent
        record = wait_for("job 1's record", lambda: read_record(record_path(sweep_dir, 1)))
        run1 = Path(record["run"])
        first = wait_for("job 1 training", lambda: (s := read_status(run1) or {}).get("update", 0) > 2 and s)
        in_background(first["pid"])
        assert {j["job"]: j["state"] for j in jobs(sweep_dir)}[1] == "running"
        os.kill(first["pid"], signal.SIGUSR2)  # submitit's signal: the time limit is near, or the job is preempted
        again = wait_for("job 1 requeued and training again",
                         lambda: (s := read_status(run1) or {}).get("pid") not in (None, first["pid"])
                                 and s.get("state") == "running" and s)
        in_background(again["pid"])
        (stopped_at,) = list_checkpoints(run1)
        wait_for("job 1 past its checkpoint", lambda: (read_status(run1) or {}).get("update", 0) > stopped_at + 2)
        os.kill(int(record["scheduler_job"]), signal.SIGTERM)  # the job's controller: the executor's own process
        out, err = p.communicate(timeout=120)
    finally:
        _end_session(p)
    assert p.returncode == 0, err[-3000:]

    # by job: each name starts with the second its job started, and job 1 may start in an earlier one
    runs = sorted((d for d in tmp_path.iterdir() if (d / "manifest.yaml").is_file()), key=lambda d: d.name[-5:])
    assert [d.name[-5:] for d in runs] == ["-job0", "-job1"] and runs[1] == run1  # the requeue made no new run
    plans = [yaml.safe_load((d / "manifest.yaml").read_text())["config"]["train"]["max_updates"] for d in runs]
    assert plans == [4, 100000]
    for run in runs:
        verified(run)
    assert sorted(list_checkpoints(runs[0])) == [4] and read_status(runs[0])["state"] == "finished"
    end = read_status(run1)
    assert end["state"] == "stopped" and sorted(list_checkpoints(run1)) == [stopped_at, end["update"]]
    # the requeued job went on from the checkpoint of its stop, not from update 0: one run, updates in order
    updates = [yaml.safe_load(line)["update"] for line in (run1 / "metrics.jsonl").read_text().splitlines()]
    assert updates == list(range(1, end["update"] + 1))
    assert "SIGUSR2: stopping after this update" in (sweep_dir / ".submitit").joinpath(
        record["scheduler_job"], f"{record['scheduler_job']}_0_log.err").read_text()

    # the table at the sweep's end, and from its folder at any time
    lines = printed_table(out)
    assert lines[0] == f"sweep {sweep_dir}: 2 jobs"
    assert lines[2].split()[:3] == ["0", "finished", "4/4"] and lines[2].split()[-1] == "train.max_updates=4"
    assert lines[3].split()[:3] == ["1", "stopped", f"{end['update']}/100000"] and str(run1) in lines[3]
    assert table(sweep_dir).splitlines()[:4] == lines[:4]
    # a job not started yet (its record not written: queued) is listed from the sweep's command line
    (sweep_dir / JOBS / "1.json").unlink()
    assert [(j["job"], j["state"], j["overrides"][-1]) for j in jobs(sweep_dir)] == [
        (0, "finished", "train.max_updates=4"), (1, "pending", "train.max_updates=100000")]

    from finetune.__main__ import run

    run_dir, result = run([f"resume={run1}", f"train.max_updates={end['update'] + 2}"])
    assert result["state"] == "finished" and result["updates"] == end["update"] + 2 and "verified:" in result["verified"]


SBATCH = """#!/bin/sh
# sbatch as far as this test needs it: keep the script, start it in the background on this machine with the
# variables SLURM gives a job (tasks = nodes x tasks per node, from its #SBATCH lines), print the job id; the
# copy is what runs (submitit deletes its file once sbatch answers, maybe before the background job opened it)
cp "$1" "$SBATCH_COPY"
nodes=$(sed -n 's/^#SBATCH --nodes=//p' "$1"); per=$(sed -n 's/^#SBATCH --ntasks-per-node=//p' "$1")
SLURM_JOB_ID=4242 SLURM_NTASKS=$((nodes * per)) SLURM_JOB_NUM_NODES=$nodes SLURM_NODEID=0 \\
  SLURM_JOB_NODELIST=$(hostname) bash "$SBATCH_COPY" >"$SBATCH_COPY.log" 2>&1 &
echo "Submitted batch job 4242"
"""
SRUN = """#!/bin/sh
# srun on one node: SLURM_NTASKS copies of the command, each with its SLURM_PROCID and SLURM_LOCALID
while [ "${1#--}" != "$1" ]; do
  case "$1" in --output) out=$2; shift 2;; --error) err=$2; shift 2;; *) shift;; esac
done
i=0; pids=""
while [ "$i" -lt "$SLURM_NTASKS" ]; do
  o=$(echo "$out" | sed "s/%j/$SLURM_JOB_ID/g; s/%t/$i/g"); e=$(echo "$err" | sed "s/%j/$SLURM_JOB_ID/g; s/%t/$i/g")
  SLURM_PROCID=$i SLURM_LOCALID=$i "$@" >>"$o" 2>>"$e" &
  pids="$pids $!"; i=$((i + 1))
done
rc=0; for p in $pids; do wait "$p" || rc=$?; done; exit $rc
"""


def test_slurm_gpu_preset_submits_one_task_per_gpu_and_its_tasks_train_one_run(tmp_path):
    """The sbatch script hydra/launcher=slurm_gpu makes, run as a node runs it: its two tasks (one per GPU asked
    for) find their ranks in SLURM's variables and train one run, which rank 0 alone writes."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("sbatch", SBATCH), ("srun", SRUN)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    with socket.socket() as s:  # the job's own port (two test sessions on one machine must not share one)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = sweep("hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2",
              f'hydra.launcher.setup=["export MASTER_PORT={port}"]', "model=f5tts_tiny", *TINY,
              "data.frames_per_batch=700", f"run.root={tmp_path / 'runs'}",
              env={"PATH": f"{fake}:{os.environ['PATH']}", "SBATCH_COPY": str(tmp_path / "job.sh")})
    assert r.returncode == 0, (r.stderr[-3000:], (tmp_path / "job.sh.log").read_text()[-3000:])

    script = (tmp_path / "job.sh").read_text()
    flags = dict(line[len("#SBATCH --"):].split("=", 1) for line in script.splitlines() if line.startswith("#SBATCH --"))
    assert {k: flags[k] for k in ("partition", "nodes", "gpus-per-node", "ntasks-per-node", "cpus-per-task", "time",
                                  "signal", "job-name")} == {
        "partition": "gpu", "nodes": "1", "gpus-per-node": "2", "ntasks-per-node": "2", "cpus-per-task": "8",
        "time": "1440", "signal": "USR2@300", "job-name": "finetune"}
    assert f"export MASTER_PORT={port}" in script and "-m submitit.core._submit" in script

    (run,) = [d for d in (tmp_path / "runs").iterdir() if (d / "manifest.yaml").is_file()]
    verified(run)
    assert sorted(list_checkpoints(run)) == [2, 4]
    state = load_train_state(state_path(run, 4))
    assert state["rng_torch"].shape[0] == 2  # one row per rank: the two tasks were one process group
    logs = sorted((run.parent / "sweeps").glob("*/.submitit/4242/4242_*_log.out"))
    assert [log.read_text().count("run: ") for log in logs] == [1, 0]  # rank 0 speaks for the job
    assert read_record(next((run.parent / "sweeps").glob(f"*/{JOBS}/0.json")))["scheduler_job"] == "4242"
    assert printed_table(r.stdout)[2].split()[:3] == ["0", "finished", "4/4"]
    assert infer(f"run={run}", "nfe_step=2").is_file()


def test_each_task_derives_torch_distributed_from_slurm(monkeypatch):
    """Task 11 of a 2-node job of 8 tasks per node, from the variables SLURM sets (read by submitit)."""
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4242",
             "SLURM_ARRAY_TASK_ID": "1", "SLURM_NTASKS": "16", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1",
             "SLURM_PROCID": "11", "SLURM_LOCALID": "3", "SLURM_JOB_NODELIST": "gpu-a[07-08]"}
    for var in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    job = job_environment()
    assert job.job_id == "4242_1"  # the scheduler job a sweep's record names
    env = distributed_env(job)
    assert {k: v for k, v in env.items() if k != "MASTER_PORT"} == {
        "MASTER_ADDR": "gpu-a07", "RANK": "11", "LOCAL_RANK": "3", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("SLURM_NODEID", "0")
    assert distributed_env(job_environment())["MASTER_PORT"] == env["MASTER_PORT"]  # every task meets rank 0 there
    monkeypatch.setenv("MASTER_PORT", "29999")  # set by the launcher's setup lines: it wins
    assert distributed_env(job_environment())["MASTER_PORT"] == "29999"
    monkeypatch.setenv("RANK", "5")  # a launcher inside the job (torchrun) already placed this process
    join_processes(job_environment())
    assert os.environ["RANK"] == "5" and "WORLD_SIZE" not in os.environ
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert distributed_env(job_environment()) == {}  # one task: a single process, as without SLURM


SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"


@pytest.mark.parametrize("launcher, needles", [
    ({"_target_": SLURM, "gpus_per_node": 8, "tasks_per_node": 1}, ("gpus_per_node=8 with tasks_per_node=1",
                                                                     "tasks_per_node=8", "slurm_gpu")),
    ({"_target_": SLURM, "gpus_per_node": None, "gpus_per_task": 1, "tasks_per_node": 8}, ("gpus_per_task=1",)),
    ({"_target_": LOCAL, "nodes": 2, "tasks_per_node": 1}, ("nodes=2", "this machine")),
    ({"_target_": SLURM, "gpus_per_node": 8, "tasks_per_node": 8}, ("sbatch is not on this machine's PATH",)),
])
def test_launcher_shapes_that_cannot_work_are_refused(launcher, needles, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(UserError) as e:
        check_launcher(launcher)
    assert all(n in str(e.value) for n in needles), str(e.value)


def test_refusals_before_and_within_jobs_are_one_line(tmp_path):
    # before anything is submitted: a GPU node given to one process
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\ntouch \"$0.called\"\n")
    (fake / "sbatch").chmod(0o755)
    r = sweep("hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=8", "model=f5tts_tiny", *TINY,
              f"run.root={tmp_path}", env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert_user_error(r, "tasks_per_node=8")
    assert not (fake / "sbatch.called").exists() and not (tmp_path / "sweeps").exists()
    # within a job (a value out of range is checked in its job): the job records its refusal, the others still run,
    # and the sweep ends with its table and one error line
    r = cli("finetune", "-m", "model=f5tts_tiny", *TINY, "train.seed=1,-1", f"run.root={tmp_path}")
    assert_user_error(r, "job 1 failed", "train.seed")
    lines = printed_table(r.stdout)
    assert lines[2].split()[:3] == ["0", "finished", "4/4"] and lines[3].split() == ["1", "failed", "train.seed=-1"]
    assert lines[4].startswith("job 1: ") and "train.seed" in lines[4]


def test_a_job_resumes_only_the_run_its_own_scheduler_job_recorded(tmp_path):
    """A requeued job (the same scheduler job) continues the run its record names, once that run has a manifest;
    a record of another job in the same sweep folder (two sweeps started in the same second) is refused."""
    path = record_path(tmp_path, 0)
    first = {"job": 0, "scheduler_job": "4242_0", "host": "node1", "pid": 7, "run": str(tmp_path / "run")}
    write_record(path, first)
    assert earlier_run(path, {**first, "pid": 8}, True) == (None, False)  # killed before its run folder was made
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.yaml").write_text("{}")
    assert earlier_run(path, {**first, "pid": 8}, True) == (str(tmp_path / "run"), False)
    for other in ("4243_0", None):  # another SLURM job; a job of a sweep run in its own process
        with pytest.raises(UserError, match="another sweep.*start this one again"):
            earlier_run(path, {**first, "scheduler_job": other}, True)
    assert read_record(path) == first
