"""The cost of held-out validation: training updates/s with validation at every save against without.

Both arms run this tool's Trainer on the same model, batches and seed; one is given held-out clips (so it
validates the online and the EMA weights at every save, as data.val_clips=N does), the other none. The
checkpoint writes themselves are left out of both (they cost the same in each, and leaving them out of
the denominator makes the figure an upper bound). The arms alternate, `repeat` times.

A few updates with a save every few measure the time of one validation and of one update; the cost at
save_every=1000 (the issue's target: under 5%) is extrapolated from those two:
    with / without = (1000 x update + validation) / (1000 x update).
The held-out clips are the two demo clips (500 and 634 frames), repeated to `held` clips; a batch is
`frames` mel frames of the 500-frame clip.

Usage: python bench/validation_cost.py [models] [held] [repeat]   e.g. f5tts_tiny,f5tts_small 8 3
"""
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import machine  # noqa: E402

SAVE_EVERY = 1000  # what the figure is extrapolated to


def one(model_name: str, clips: list, held: list, updates: int, save_every: int,
        frames: int) -> tuple[float, float, int]:
    """(seconds of fit(), seconds of it spent validating, validations) for one arm."""
    import torch

    from finetune.lock.builder import build_model
    from finetune.train import Trainer, make_accelerator
    from bench.makers import VOCAB, loop_config, spec_of

    cfg = loop_config({"max_updates": updates, "save_every": save_every, "log_every": 10**6, "seed": 0},
                      {"lr": 1e-4, "warmup_updates": 1}, {"frames_per_batch": frames, "max_samples": 64})
    torch.manual_seed(0)
    model = build_model(spec_of(model_name), VOCAB)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, make_accelerator(cfg), model, clips, Path(tmp), {"sha256": "0" * 64}, held=held)
        spent = {"seconds": 0.0, "calls": 0}
        validate = trainer._validate

        def timed_validate(ema):
            started = time.perf_counter()
            try:
                return validate(ema)
            finally:
                spent["seconds"] += time.perf_counter() - started
                spent["calls"] += 1

        trainer._validate = timed_validate
        trainer.save = lambda val=None: None  # the same in both arms: left out (see the docstring)
        started = time.perf_counter()
        result = trainer.fit()
        seconds = time.perf_counter() - started
    assert result["updates"] == updates
    return seconds, spent["seconds"], spent["calls"]


def main(models=("f5tts_tiny", "f5tts_small"), held: int = 8, repeat: int = 3, updates: int = 6, save_every: int = 3,
         frames: int = 2000) -> None:
    from finetune.media.dataset import load_clips
    from bench.makers import spec_of

    print(f"machine: {machine()}; CPU, fp32; {updates} updates, a save every {save_every}; batches of {frames} frames; "
          f"{held} held-out clips (online + EMA validated at each save)")
    print(f"{'model':<12} {'updates/s without':>17} {'with':>8} {'ratio':>6} {'validation s':>12} {'update s':>9} "
          f"{'at save_every=' + str(SAVE_EVERY):>20}")
    figures = []
    for name in models:
        demo = load_clips({"kind": "demo", "path": None}, spec_of(name))[0]
        clips = [demo[0]] * (updates * max(frames // demo[0].frames, 1))
        held_clips = [demo[i % 2] for i in range(held)]
        runs = {"without": [], "with": []}
        for _ in range(repeat):
            runs["without"].append(one(name, clips, [], updates, save_every, frames))
            runs["with"].append(one(name, clips, held_clips, updates, save_every, frames))
        rate = {arm: statistics.median(updates / r[0] for r in rs) for arm, rs in runs.items()}
        validation = statistics.median(r[1] / r[2] for r in runs["with"])  # one save's validation (both weight sets)
        update = statistics.median((r[0] - r[1]) / updates for r in runs["with"])
        extrapolated = (SAVE_EVERY * update + validation) / (SAVE_EVERY * update)
        figures.append(extrapolated)
        print(f"{name:<12} {rate['without']:17.3f} {rate['with']:8.3f} {rate['without'] / rate['with']:5.2f}x "
              f"{validation:12.3f} {update:9.3f} {(extrapolated - 1) * 100:19.3f}%")
    worst = max(figures)
    print(f"validation cost, with/without at save_every={SAVE_EVERY} (extrapolated), worst model: "
          f"{(worst - 1) * 100:.3f}% slower (target: under 5%)")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*(args[:1] and [tuple(args[0].split(","))]), *(args[1:2] and [int(args[1])]), *(args[2:3] and [int(args[2])]))
