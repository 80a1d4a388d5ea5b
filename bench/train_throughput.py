"""Training throughput: this tool's loop against upstream f5-tts's Trainer, same model, data, batch and seed.

Each side runs in a fresh process (tests/same_math.py) and times its training call alone; the sides
alternate so machine noise hits both. Usage: python bench/train_throughput.py [repeat]
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import machine  # noqa: E402

CASES = [("f5tts_tiny", 24), ("e2tts_tiny", 24), ("f5tts_small", 4)]


def one(side: str, model: str, clips: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
        r = subprocess.run([sys.executable, "tests/same_math.py", side, f"{tmp}/w", "bench", model, str(clips)],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        m = re.search(r"train seconds: ([\d.]+) updates: (\d+) frames: (\d+)", r.stdout)
        if r.returncode or not m:
            raise SystemExit(f"{side} {model} failed:\n{r.stderr[-2000:]}")
        return float(m.group(1)), int(m.group(2)), int(m.group(3))


def main(repeat: int = 3, cases=CASES) -> None:
    print(f"machine: {machine()}; one demo clip (500 frames) per batch, fp32, CPU")
    print(f"{'model':<12} {'side':<9} {'updates/s (median, range)':<30} {'mel frames/s':>12}")
    ratios = []
    for model, clips in cases:
        rates = {"ours": [], "upstream": []}
        frames = 0
        for _ in range(repeat):
            for side in ("upstream", "ours"):
                seconds, updates, frames = one(side, model, clips)
                rates[side].append(updates / seconds)
        for side, r in rates.items():
            med = statistics.median(r)
            print(f"{model:<12} {side:<9} {med:8.2f} ({min(r):.2f}-{max(r):.2f}){'':<12} {med * frames / clips:12.0f}")
        ratio = statistics.median(a / b for a, b in zip(rates["ours"], rates["upstream"]))
        ratios.append(ratio)
        print(f"{model:<12} ratio ours/upstream (pairwise median): {ratio:.2f}x")
    print(f"training throughput, ours/upstream, median over models: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
