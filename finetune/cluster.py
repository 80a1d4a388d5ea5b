"""Jobs started by Hydra's submitit launchers (hydra/launcher=submitit_slurm, slurm_gpu, submitit_local): the
processes of a job joined into one torch.distributed group, the launcher's shape checked before anything is
submitted, and submitit's time-limit signal turned into a checkpoint before the job is requeued.

One task per GPU: SLURM (or submitit's local executor) starts every process of a job itself, and each learns
its place from the scheduler's variables, read through submitit's JobEnvironment; no launcher runs inside the
job. The alternative, one `accelerate launch` per node, would put a second process tree between SLURM and
the trainer, which SLURM's signals would then have to cross."""
import os
import shutil
import signal
import sys

from .lock.errors import UserError

# what torchrun gives each process; accelerate (PartialState) reads these to join the process group
DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


def job_environment():
    """submitit's description of the job this process is a task of, or None outside a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    return submitit.JobEnvironment()


def distributed_env(job) -> dict[str, str]:
    """torch.distributed's variables for this task of `job` (a submitit JobEnvironment); none for a job of
    one task. Every task of a job derives the same address and port: the first host of the job's node list
    (this machine when the job has one node) and a port from the job's id."""
    if job.num_tasks <= 1:
        return {}
    digits = "".join(c for c in str(job.raw_job_id) if c.isdigit()) or "0"
    return {
        "MASTER_ADDR": "127.0.0.1" if job.num_nodes == 1 else job.hostnames[0],
        # MASTER_PORT set in the job's environment (the launcher's `setup` lines) wins: two jobs on one node
        # whose ids differ by a multiple of 20000 would otherwise meet on one port
        "MASTER_PORT": os.environ.get("MASTER_PORT") or str(20000 + int(digits) % 20000),
        "RANK": str(job.global_rank),
        "LOCAL_RANK": str(job.local_rank),
        "WORLD_SIZE": str(job.num_tasks),
        "LOCAL_WORLD_SIZE": str(job.num_tasks // job.num_nodes),
    }


def join_processes(job) -> None:
    """Before accelerate starts: this task's place in the job, unless a launcher inside the job (torchrun)
    already gave it one."""
    if job is not None and "RANK" not in os.environ:
        os.environ.update(distributed_env(job))


def check_launcher(launcher: dict) -> None:
    """Refuse, before anything is submitted, a job shape that would waste GPUs or fail on the nodes: every
    process of a job is one task on one GPU."""
    gpus, tasks = launcher.get("gpus_per_node"), launcher.get("tasks_per_node") or 1
    if launcher.get("gpus_per_task"):
        raise UserError(f"hydra.launcher.gpus_per_task={launcher['gpus_per_task']}: give GPUs per node instead "
                        "(hydra.launcher.gpus_per_node=N with hydra.launcher.tasks_per_node=N): each task picks "
                        "its GPU by its local rank among those of its node", code="config")
    if gpus and gpus > 1 and tasks != gpus:
        raise UserError(f"hydra.launcher.gpus_per_node={gpus} with tasks_per_node={tasks}: f5tune runs one task "
                        f"per GPU; add hydra.launcher.tasks_per_node={gpus}, or use hydra/launcher=slurm_gpu, "
                        "which sets it from gpus_per_node", code="config")
    target = str(launcher.get("_target_", ""))
    if target.endswith("SlurmLauncher") and not shutil.which("sbatch"):
        raise UserError("hydra/launcher: SLURM's sbatch is not on this machine's PATH; submit from a machine of "
                        "the cluster (a login node), or run here with hydra/launcher=submitit_local", code="missing")
    if target.endswith("LocalLauncher") and (launcher.get("nodes") or 1) > 1:
        raise UserError(f"hydra.launcher.nodes={launcher['nodes']}: submitit_local runs on this machine only; "
                        "use hydra.launcher.nodes=1 (or hydra/launcher=slurm_gpu on a cluster)", code="config")


class CheckpointThenRequeue:
    """submitit's own handler of its time-limit signal (USR2, sent `signal_delay_s` before the limit, and on
    preemption) requeues the job and exits at once, losing the updates since the last checkpoint. While the
    trainer runs, the signal is handed to it instead, as SIGTERM is: it finishes its update and saves a
    checkpoint there; then `requeue_if_stopped` calls submitit's handler, and the requeued job resumes the
    run (finetune/sweep.py). Outside training there is nothing to save, and submitit's handler runs at once."""

    def __init__(self, job):
        self.job, self.caught = job, []

    def __enter__(self):
        if self.job is None:
            return self
        self.sig = self.job._usr_sig()
        self.submitit = signal.getsignal(self.sig)
        self.idle = signal.getsignal(signal.SIGTERM)  # submitit's: logs SIGTERM and carries on
        signal.signal(self.sig, self._handle)
        return self

    def _handle(self, signum, frame):
        trainer = signal.getsignal(signal.SIGTERM)
        if trainer is self.idle or not callable(trainer):  # not training (the trainer installs its own)
            self.submitit(signum, frame)
            return
        self.caught.append(signum)
        trainer(signum, frame)

    def __exit__(self, *exc):
        if self.job is not None:
            signal.signal(self.sig, self.submitit)

    def requeue_if_stopped(self, result: dict) -> None:
        if not (self.caught and result.get("state") == "stopped"):
            return
        from submitit.core.utils import UncompletedJobError

        try:
            self.submitit(self.caught[0], None)  # rank 0 requeues and exits; other ranks return
        except UncompletedJobError as e:  # timed out more often than hydra.launcher.max_num_timeout allows
            print(f"not requeued ({e}); the run stopped with a checkpoint: resume it with resume=<its folder>",
                  file=sys.stderr)
