"""Hydra multirun: each job gets its own run folder and manifest, jobs may differ in anything (mixed precision
included: accelerate keeps it in process-wide state), and the sweep ends with a table of the jobs, read from the
sweep's folder (the same as `python -m finetune.sweep <folder>` prints)."""
import json

import yaml

from tests.conftest import cli


def test_sweep_gives_each_job_a_run_and_a_summary(tmp_path):
    r = cli("finetune", "-m", "model=e2tts_tiny,f5tts_tiny", "train.mixed_precision=no,bf16", f"run.root={tmp_path}",
            "experiment=demo", "train.max_updates=2", "train.save_every=2")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted((p for p in tmp_path.iterdir() if (p / "manifest.yaml").is_file()), key=lambda p: p.name[-1])
    assert len(runs) == 4 and all(p.name.endswith(f"-job{n}") for n, p in enumerate(runs))
    seen = set()
    for run in runs:
        manifest = yaml.safe_load((run / "manifest.yaml").read_text())
        seen.add((manifest["model"]["name"], manifest["config"]["train"]["mixed_precision"]))
        assert manifest["config"]["run"]["name"] == run.name
    assert seen == {(m, p) for m in ("e2tts_tiny", "f5tts_tiny") for p in ("no", "bf16")}

    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    table = r.stdout[r.stdout.index(f"sweep {sweep_dir}: 4 jobs"):].splitlines()
    assert table[1].split() == ["job", "state", "updates", "last", "loss", "run", "swept"]
    assert len(table) == 6
    for n, (line, run) in enumerate(zip(table[2:], runs)):
        job, state, updates, loss, path, *swept = line.split()
        assert (int(job), state, updates, path) == (n, "finished", "2/2", str(run))
        record = json.loads((sweep_dir / "jobs" / f"{n}.json").read_text())
        assert record["run"] == str(run) and set(swept) < set(record["overrides"])  # what tells the jobs apart
        assert swept[0].startswith("model=") and swept[1].startswith("train.mixed_precision=")
        # the loss shown is the last one the job's metrics logged
        last = yaml.safe_load((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert abs(last["loss"] - float(loss)) < 1e-6
    r = cli("finetune.sweep", str(sweep_dir))
    assert r.returncode == 0 and r.stdout.splitlines() == table, r.stderr
