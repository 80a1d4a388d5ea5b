"""Hydra multirun: a summary table of the sweep's runs once every job has finished."""
from hydra.experimental.callback import Callback


def final_line(run_dir) -> tuple[str, str]:
    """(updates, final loss) from the run's train.log."""
    from pathlib import Path

    for line in reversed((Path(run_dir) / "train.log").read_text().splitlines()):
        if line.startswith("done:"):  # "done: N updates, final loss X"
            words = line.split()
            return words[1], words[-1]
    return "?", "?"


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
            updates, loss = final_line(row["run"])
            lines.append(f"{row['run']:<48} {row['model']:<14} {updates:>7} {loss:>10}")
        print("sweep summary:\n" + "\n".join(lines))
