"""A training update here does what upstream's f5_tts.model.Trainer does: same weights after a few updates.

Same tiny model, batches and seed through both (tests/same_math.py, one fresh process per side), with and
without gradient accumulation; this covers the CFM loss, AdamW (lr, weight decay), warmup then decay,
gradient clipping and EMA. Differences on purpose, allowed for here and listed in the README:
- upstream's DataLoader draws one number from the global RNG when an epoch starts; ours has its own
  generator so that a resumed run matches an uninterrupted one (the runner draws that number itself);
- our LR schedule is upstream's in closed form, and upstream uses fused AdamW: both agree to float rounding.
"""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import OFFLINE, REPO


def run(side, out, accum):
    r = subprocess.run([sys.executable, "tests/same_math.py", side, str(out), str(accum)], cwd=REPO,
                       env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return load_file(str(out))


@pytest.mark.parametrize("accum", [1, 2])
def test_updates_match_upstream_trainer(tmp_path, accum):
    ours, theirs = run("ours", tmp_path / "ours.st", accum), run("upstream", tmp_path / "up.st", accum)
    assert ours.keys() == theirs.keys()
    for kind in ("online.", "ema."):
        keys = [k for k in ours if k.startswith(kind)]
        worst = max((ours[k] - theirs[k]).abs().max().item() for k in keys)
        assert worst < 1e-6, (kind, worst)
    # and the updates did something: weights moved far more than the tolerance
    torch.manual_seed(0)
    from finetune.lock.builder import build_model
    from tests.test_builder import VOCAB, spec_of

    start = build_model(spec_of("f5tts_tiny"), VOCAB).state_dict()
    moved = max((ours[f"online.{k}"] - v).abs().max().item() for k, v in start.items())
    assert moved > 1e-4
