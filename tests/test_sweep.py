"""Hydra multirun: each job gets its own run folder and manifest, jobs may differ in anything (mixed precision
included: accelerate keeps it in process-wide state), and the sweep ends with a table of the jobs' results."""
import yaml

from tests.conftest import cli


def test_sweep_gives_each_job_a_run_and_a_summary(tmp_path):
    r = cli("finetune", "-m", "model=e2tts_tiny,f5tts_tiny", "train.mixed_precision=no,bf16", f"run.root={tmp_path}",
            "experiment=demo", "train.max_updates=2", "train.save_every=2")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 4 and all(p.name.endswith(f"-job{n}") for n, p in enumerate(sorted(runs, key=lambda p: p.name[-1])))
    seen = set()
    for run in runs:
        manifest = yaml.safe_load((run / "manifest.yaml").read_text())
        seen.add((manifest["model"]["name"], manifest["config"]["train"]["mixed_precision"]))
        assert manifest["config"]["run"]["name"] == run.name
    assert seen == {(m, p) for m in ("e2tts_tiny", "f5tts_tiny") for p in ("no", "bf16")}
    table = r.stdout[r.stdout.index("sweep summary:"):].splitlines()
    assert table[1].split() == ["run", "model", "updates", "final", "loss"]
    assert len(table) == 6 and all(line.split()[2] == "2" for line in table[2:])
    assert {line.split()[0] for line in table[2:]} == {str(p) for p in runs}
    # the final loss comes from the job itself (its return value), and is the one its metrics logged
    for line in table[2:]:
        run, loss = line.split()[0], float(line.split()[3])
        last = yaml.safe_load(open(f"{run}/metrics.jsonl").read().splitlines()[-1])
        assert abs(last["loss"] - loss) < 1e-6
