"""Hydra multirun (python -m finetune -m ...), whichever launcher runs its jobs (in this process, or submitted
through submitit to SLURM or local processes): each job is one run folder with its own manifest, and leaves a
record in the sweep's folder (`<run.root>/sweeps/<time>/jobs/<N>.json`: its overrides, its run, its scheduler
job, its refusal if any). The sweep's table is read from that folder, at the sweep's end and at any time with

    python -m finetune.sweep <sweep folder>

A job that submitit requeues (time limit or preemption) finds its own record (the same scheduler job) and
resumes that run under the run's lock instead of starting another."""
import json
import os
import socket
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from .lock.errors import CODES, UserError, user_errors

MULTIRUN = "multirun.yaml"  # Hydra's record of the sweep's command line, written before any job starts
JOBS = "jobs"


def record_path(sweep_dir, num: int) -> Path:
    return Path(sweep_dir) / JOBS / f"{num}.json"


def read_record(path: Path) -> dict | None:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(path: Path, record: dict) -> None:
    from .lock.files import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())


# ---- a job ----------------------------------------------------------------------------------------------

def run_job(cfg, hydra_cfg) -> dict:
    """One job of a sweep, in whichever process the launcher runs it. A refusal is recorded and returned (the
    sweep goes on with its other jobs, and ends with exit status 2), not raised."""
    from .cluster import CheckpointThenRequeue, job_environment, join_processes

    job = job_environment()
    join_processes(job)  # before accelerate: the tasks of a multi-GPU job are one process group
    main = int(os.environ.get("RANK", "0")) == 0
    num = hydra_cfg.job.num
    path = record_path(hydra_cfg.runtime.output_dir, num)
    record = {"job": num, "overrides": list(hydra_cfg.overrides.task), "scheduler_job": job and job.job_id,
              "host": socket.gethostname(), "pid": os.getpid()}
    try:
        from .config import plain
        from .lock.schema import FinetuneConfig

        config = plain(cfg, FinetuneConfig)
        # jobs can start within the same second: keep their folders apart
        config["run"]["name"] = f"{config['run']['name']}-job{num}"
        record["run"] = str(Path(config["run"]["root"]).absolute() / config["run"]["name"])
        earlier, finished = earlier_run(path, record, main)
        with CheckpointThenRequeue(job) as signals:
            if finished:
                run_dir, result = Path(earlier), {"state": "finished"}
            elif earlier:
                from .runs import resume

                print(f"job {num}: {job.job_id} again: resuming {earlier}", file=sys.stderr)
                run_dir, result = resume(earlier, [])
            else:
                if main:
                    write_record(path, record)
                from .runs import start

                run_dir, result = start(config)
        if main and result.get("verified"):  # one line per job, not per process
            print(f"{result['verified']}\nrun: {run_dir}")
        signals.requeue_if_stopped(result)
        return {"run": str(run_dir), "model": config["model"]["name"], **result}
    except UserError as e:
        if job is not None:  # the job's own log; the sweep's process prints it once, after its table
            print(e.line(), file=sys.stderr)
        old = read_record(path)
        ours = old is None or (old.get("scheduler_job") or old.get("pid")) == (record["scheduler_job"] or os.getpid())
        if main and ours:  # never over the record of another sweep's job (the refusal that found it)
            write_record(path, {**(old or record), "error": str(e), "code": e.code})
        return {"error": str(e), "code": e.code}


def earlier_run(path: Path, record: dict, main: bool) -> tuple[str | None, bool]:
    """(run folder, finished) when this job already ran under the same scheduler job (submitit requeued it)
    and made its run folder; (None, False) for a first start. Rank 0 reads the record; every rank learns."""
    found = {}

    def look():
        if not main:
            return
        old = read_record(path)
        if old is None:
            return
        if record["scheduler_job"] is None or old.get("scheduler_job") != record["scheduler_job"]:
            raise UserError(f"{path} records job {record['job']} of another sweep (scheduler job "
                            f"{old.get('scheduler_job')}, host {old.get('host')}, pid {old.get('pid')}): two sweeps "
                            f"started in the same second share {path.parent.parent}; start this one again", code="busy")
        run_dir = Path(old.get("run", ""))
        if (run_dir / "manifest.yaml").is_file():
            from .runfolder import read_status

            found["run"] = str(run_dir)
            found["finished"] = (read_status(run_dir) or {}).get("state") == "finished"

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        look()
        return found.get("run"), found.get("finished", False)
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from .runs import _on_every_rank

    PartialState(cpu=not torch.cuda.is_available())  # the process group, as start() and resume() ask for it
    _on_every_rank(look)  # rank 0's refusal stops every rank
    return tuple(broadcast_object_list([(found.get("run"), found.get("finished", False))])[0])


# ---- the sweep's table ----------------------------------------------------------------------------------

def planned_jobs(sweep_dir: Path) -> list[list[str]]:
    """Each job's overrides, in job order, expanded from multirun.yaml by Hydra's basic sweeper itself (so
    jobs not started yet are listed); [] when another sweeper ran the sweep, or for a glob() sweep."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .config import CONFIG_ERRORS
    from .lock.manifest import load_yaml

    path = Path(sweep_dir) / MULTIRUN
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    hydra = (load_yaml(text, path, "multirun.yaml") or {}).get("hydra") or {}
    sweeper = hydra.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return []
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]  # as BasicSweeper reads them
    try:
        overrides = OverridesParser.create().parse_overrides(params + list(hydra["overrides"]["task"]))
        # the basic sweeper's jobs: the product of each key's values, in the order the keys were given
        values = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
                  else [o.input_line] for o in overrides]
        return [list(job) for job in itertools.product(*values)]
    except CONFIG_ERRORS:
        return []


def jobs(sweep_dir) -> list[dict]:
    """Every job of the sweep: planned (from multirun.yaml) and recorded (jobs/<N>.json), with its state."""
    from .runfolder import last_metrics, read_status, state

    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / MULTIRUN).is_file() and not (sweep_dir / JOBS).is_dir():
        raise UserError(f"{sweep_dir} is not a sweep folder (no {MULTIRUN}): a sweep's folder is "
                        "<run.root>/sweeps/<time>, printed when the sweep starts", code="missing")
    rows = {n: {"job": n, "overrides": o, "state": "pending"} for n, o in enumerate(planned_jobs(sweep_dir))}
    for path in (sweep_dir / JOBS).glob("*.json"):
        record = read_record(path)
        if record is None or not isinstance(record.get("job"), int):
            continue
        row = rows.setdefault(record["job"], {"job": record["job"], "overrides": record.get("overrides", [])})
        row["run"] = record.get("run")
        if record.get("error"):
            row["state"], row["error"] = "failed", record["error"]
        elif row["run"] and (Path(row["run"]) / "manifest.yaml").is_file():
            status, last = read_status(row["run"]) or {}, last_metrics(Path(row["run"])) or {}
            row["state"] = state(Path(row["run"]), status or None)
            row["updates"], row["planned"], row["loss"] = status.get("update"), status.get("planned"), last.get("loss")
        else:
            row["state"] = "started"  # recorded, its run folder not made yet
    return [rows[n] for n in sorted(rows)]


def table(sweep_dir) -> str:
    rows = jobs(sweep_dir)
    # the overrides that tell the jobs apart
    varying = {o.split("=", 1)[0] for r in rows for o in r["overrides"]
               if any(o not in other["overrides"] for other in rows)}
    lines = [f"sweep {sweep_dir}: {len(rows)} job{'' if len(rows) == 1 else 's'}",
             f"{'job':>3}  {'state':<11} {'updates':>13} {'last loss':>10}  {'run':<48} swept"]
    for r in rows:
        updates = f"{r['updates']}/{r.get('planned') or '?'}" if r.get("updates") is not None else ""
        loss = f"{r['loss']:.6f}" if isinstance(r.get("loss"), (int, float)) else ""
        swept = " ".join(o for o in r["overrides"] if o.split("=", 1)[0] in varying)
        lines.append(f"{r['job']:>3}  {r['state']:<11} {updates:>13} {loss:>10}  {r.get('run') or '':<48} {swept}")
    lines += [f"job {r['job']}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join(lines)


class SweepSummary(Callback):
    """In the process that runs the sweep: the launcher checked before anything is submitted, and the table
    once every job has ended (exit status 2 if a job was refused)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        from .cluster import check_launcher

        keys = ("_target_", "gpus_per_node", "tasks_per_node", "gpus_per_task", "nodes")
        with user_errors():
            check_launcher({k: OmegaConf.select(config, f"hydra.launcher.{k}") for k in keys})
        sweep_dir = config.hydra.sweep.dir
        print(f"sweep: {sweep_dir} (python -m finetune.sweep {sweep_dir} shows its jobs)", flush=True)

    def on_multirun_end(self, config, **kwargs) -> None:
        with user_errors():
            print(table(config.hydra.sweep.dir), flush=True)
            failed = [r for r in jobs(config.hydra.sweep.dir) if r.get("error")]
            if failed:
                more = f" (and {len(failed) - 1} more: see the table)" if len(failed) > 1 else ""
                raise UserError(f"job {failed[0]['job']} failed: {failed[0]['error']}{more}",
                                code=failed[0].get("code") if failed[0].get("code") in CODES else "usage")


def main(argv: list[str]) -> None:
    with user_errors():
        if len(argv) != 1 or argv[0].startswith("-"):
            raise UserError("usage: python -m finetune.sweep <sweep folder> (<run.root>/sweeps/<time>)", code="usage")
        print(table(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
