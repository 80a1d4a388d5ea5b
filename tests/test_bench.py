"""Benchmarks are not run in CI; this only checks that each script still imports and has its entry point."""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.stem not in ("__init__", "common"))


def test_the_benchmarks_are_all_here():
    assert {p.stem for p in SCRIPTS} >= {"train_throughput", "infer_cold_start", "load_memory", "preflight",
                                          "prepare_speed", "upstream_infer"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_script_starts(script):
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main) and module.__doc__
