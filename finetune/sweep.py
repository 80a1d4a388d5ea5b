"""Hydra multirun: a summary table of the sweep's runs, from each job's return value, once all have finished."""
from hydra.experimental.callback import Callback


class SweepSummary(Callback):
    def __init__(self):
        self.rows = []

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus

        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict):
            self.rows.append(job_return.return_value)

    def on_multirun_end(self, config, **kwargs) -> None:
        if not self.rows:
            return
        lines = [f"{'run':<48} {'model':<14} {'updates':>7} {'final loss':>10}"]
        for row in self.rows:
            lines.append(f"{row['run']:<48} {row['model']:<14} {row['updates']:>7} {row['loss']:>10.6f}")
        print("sweep summary:\n" + "\n".join(lines))
