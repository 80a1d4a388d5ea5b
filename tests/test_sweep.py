"""Hydra multirun: each job gets its own run folder and manifest, and the sweep ends with a summary table."""
import yaml

from tests.conftest import TINY, cli


def test_sweep_gives_each_job_a_run_and_a_summary(tmp_path):
    r = cli("finetune", "-m", "model=e2tts_tiny,f5tts_tiny", "optim.lr=1e-3,2e-3", f"run.root={tmp_path}",
            *[a for a in TINY if not a.startswith("train.")], "train=demo", "train.max_updates=2")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 4
    seen = set()
    for run in runs:
        manifest = yaml.safe_load((run / "manifest.yaml").read_text())
        seen.add((manifest["model"]["name"], manifest["config"]["optim"]["lr"]))
    assert seen == {(m, lr) for m in ("e2tts_tiny", "f5tts_tiny") for lr in (1e-3, 2e-3)}
    table = r.stdout[r.stdout.index("sweep summary:"):].splitlines()
    assert table[1].split() == ["run", "model", "updates", "final", "loss"]
    assert len(table) == 6 and all(line.split()[2] == "2" for line in table[2:])
    assert {line.split()[0] for line in table[2:]} == {str(p) for p in runs}


def test_sweep_over_mixed_precision_runs_each_job_with_its_own(tmp_path):
    # the jobs share one process, where accelerate keeps its settings in process-wide state
    r = cli("finetune", "-m", "model=f5tts_tiny", "train.mixed_precision=no,bf16", f"run.root={tmp_path}",
            *[a for a in TINY if not a.startswith("train.")], "train=demo", "train.max_updates=1")
    assert r.returncode == 0, r.stderr[-3000:]
    manifests = [yaml.safe_load((run / "manifest.yaml").read_text()) for run in tmp_path.iterdir() if run.is_dir()]
    assert sorted(m["config"]["train"]["mixed_precision"] for m in manifests) == ["bf16", "no"]
