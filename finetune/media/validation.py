"""Validation loss: the flow-matching loss on held-out clips with fixed noise, time samples, masks and
condition drops, so that the number is comparable across checkpoints and across runs on the same data."""
import random
from contextlib import contextmanager

import torch

from .dataset import collate


@contextmanager
def seeded(seed: int, device):
    """Draws inside come from `seed` (torch on CPU and the device, and Python's random, which upstream's CFM
    uses for its condition drops); the streams outside are left exactly where they were."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


def validation_loss(model, clips, seed: int = 0) -> float:
    """Mean loss over `clips`, each alone in its batch (so padding never depends on the others) and each with
    its own seed; the model is evaluated without dropout and left in the mode it was in."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            for i, clip in enumerate(clips):
                batch = collate([clip.with_mel()])
                with seeded(seed + i, device):
                    loss, _, _ = model(batch["mel"].to(device), text=batch["text"], lens=batch["lens"].to(device))
                total += loss.item()
    finally:
        model.train(was_training)
    return total / len(clips)
