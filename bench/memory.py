"""Peak training memory per model size and frame budget, measured as data.frames_per_batch=auto measures it
(finetune/memory.py: a real update of a copy of the model, EMA copy, AdamW state and activations included),
so a user can pick a budget before starting. On a GPU it also reports what upstream's app's "Auto Settings"
formula (frames = 38400 x (GPU GB - 5) / 75) would pick on this card.

Usage: python bench/memory.py [models] [budgets] [mixed]   e.g. f5tts_tiny,f5tts_small 1000,2000,4000 no
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine  # noqa: E402

CLIP_FRAMES = 500  # ~5.3 s clips: the batch is as many as fit the budget


def main(models=("f5tts_tiny", "f5tts_small", "e2tts_small"), budgets=(1000, 2000, 4000), mixed: str = "no") -> None:
    from finetune.lock.builder import build_model
    from finetune.media.dataset import Clip
    from finetune.memory import measure
    from finetune.train import make_accelerator, optimizer_class
    from bench.makers import VOCAB, loop_config, spec_of

    cfg = loop_config({"mixed_precision": mixed}, {}, {"frames_per_batch": max(budgets), "max_samples": 64})
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    g = torch.Generator().manual_seed(0)
    print(f"machine: {machine()}; {device}; mixed precision {mixed}; AdamW; clips of {CLIP_FRAMES} frames")
    print(f"{'model':<13} {'parameters':>11} " + " ".join(f"{b:>9}" for b in budgets) + "   (MB added by training)")
    for name in models:
        spec = spec_of(name)
        model = build_model(spec, VOCAB).to(device)
        n = max(budgets) // CLIP_FRAMES
        clips = [Clip(f"synthetic:{i}", Path("-"), "", [VOCAB[int(t)] for t in torch.randint(1, len(VOCAB), (80,),
                 generator=g)], CLIP_FRAMES, torch.randn(spec["mel"]["n_mel_channels"], CLIP_FRAMES, generator=g))
                 for i in range(n)]
        measure(model, clips, CLIP_FRAMES, cfg, accelerator, optimizer_class("adamw"))  # first-update caches
        peaks = [measure(model, clips, b, cfg, accelerator, optimizer_class("adamw")) for b in budgets]
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:<13} {params / 1e6:10.1f}M " + " ".join(f"{'OOM' if p is None else f'{p:.0f}':>9}" for p in peaks))
        del model
    if device.type == "cuda":
        gb = torch.cuda.get_device_properties(device).total_memory / 2**30
        print(f"upstream's Auto Settings on this {gb:.0f} GB card would pick {int(38400 * (gb - 5) / 75)} frames")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*(args[:1] and [args[0].split(",")]), *(args[1:2] and [tuple(map(int, args[1].split(",")))]), *args[2:3])
