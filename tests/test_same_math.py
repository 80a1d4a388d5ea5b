"""A training update here does what upstream's f5_tts.model.Trainer does: same weights after a few updates.

Same tiny model, batches and seed through both (tests/same_math.py, one fresh process per side running every
case): identical clips with and without gradient accumulation, and clips of different lengths packed several
to a batch, where upstream's batch order must be ours too. This covers the CFM loss, AdamW (lr, weight decay),
warmup then decay, gradient clipping, EMA and the sampler. Differences on purpose, allowed for here and listed
in the README:
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

from tests import preloaded
from tests.conftest import OFFLINE, REPO
from tests.same_math import CASES


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    out, procs = tmp_path_factory.mktemp("same_math"), {}
    for side in ("ours", "upstream"):  # both sides at once: two cores
        procs[side] = preloaded.Popen([sys.executable, "tests/same_math.py", side, str(out / side)], cwd=REPO,
                                      env={**os.environ, **OFFLINE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
    for side, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (side, err[-3000:])
    return {(side, case): load_file(str(out / f"{side}-{case}.safetensors")) for side in procs for case in CASES}


@pytest.mark.parametrize("case", sorted(CASES))
def test_updates_match_upstream_trainer(weights, case):
    ours, theirs = weights["ours", case], weights["upstream", case]
    assert ours.keys() == theirs.keys()
    for kind in ("online.", "ema."):
        keys = [k for k in ours if k.startswith(kind)]
        worst = max((ours[k] - theirs[k]).abs().max().item() for k in keys)
        assert worst < 1e-6, (kind, worst)
    # and the updates did something: weights moved far more than the tolerance
    torch.manual_seed(0)
    from finetune.lock.builder import build_model
    from bench.makers import VOCAB, spec_of

    start = build_model(spec_of("f5tts_tiny"), VOCAB).state_dict()
    moved = max((ours[f"online.{k}"] - v).abs().max().item() for k, v in start.items())
    assert moved > 1e-4
