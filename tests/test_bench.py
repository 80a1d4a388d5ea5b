"""Each benchmark runs its smallest case end to end (tiny models, one repeat), so a script that no longer works
fails here; the figures it prints are not checked (they belong in BENCHMARKS.md, measured on purpose), so the
tools a script starts are forked from tests/preloaded.py's server instead of started afresh."""
import importlib.util
from pathlib import Path

import pytest

import bench.common
from tests import preloaded

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in ("__init__", "common", "makers"))

# script -> (main's arguments for its smallest case, text its last line starts with)
SMALLEST = {
    "train_throughput": ({"repeat": 1, "cases": [("f5tts_tiny", 3)]}, "training throughput, ours/upstream"),
    "infer_cold_start": ({"repeat": 1, "models": ("f5tts_tiny",), "warm": False}, "inference cold start, ours/upstream"),
    "load_memory": ({"repeat": 1, "model": "f5tts_tiny"}, "load memory: ours"),
    "preflight": ({"repeat": 1, "model_name": "f5tts_tiny"}, "pre-flight / upstream full load"),
    "prepare_speed": ({"clips": 3, "repeat": 1, "updates": 2}, "data preparation, clips per second"),
    "gpu_step": ({"argv": ["--model", "f5tts_tiny", "--mixed", "no", "--updates", "2", "--repeat", "1",
                          "--clips", "4"]},
                 "full-size training step"),
    "memory": ({"models": ("f5tts_tiny",), "budgets": (600, 1200)}, "f5tts_tiny"),
    "kill_trials": ({"n": 1, "races": False, "updates": 8}, "kill trials: trials 1"),
    "slice_speed": ({"minutes": 0.1, "repeat": 1}, "re-run / first run"),
    "lora": ({"models": ("f5tts_tiny",), "updates": 2}, "f5tts (Base), from shapes"),
    "validation_cost": ({"models": ("f5tts_tiny",), "held": 2, "repeat": 1, "updates": 2, "save_every": 1}, "validation cost"),
}
NOT_RUN = {"upstream_infer": "upstream's side of infer_cold_start, run by it"}


def test_every_benchmark_has_a_smallest_case():
    assert set(SCRIPTS) == set(SMALLEST) | set(NOT_RUN)


@pytest.mark.parametrize("script", sorted(SMALLEST), ids=str)
def test_benchmark_runs_its_smallest_case(script, capsys, monkeypatch):
    if not (BENCH / f"{script}.py").exists():
        pytest.fail(f"bench/{script}.py is listed here but missing")
    spec = importlib.util.spec_from_file_location(f"bench_{script}", BENCH / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for holder in (module, bench.common):  # what each script starts a tool through
        if hasattr(holder, "subprocess"):
            monkeypatch.setattr(holder, "subprocess", preloaded)
    assert module.__doc__
    args, last = SMALLEST[script]
    module.main(**args)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines and any(line.startswith(last) for line in lines[-3:]), lines[-5:]
