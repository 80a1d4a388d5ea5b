"""Run a few updates of a tiny F5 model through upstream's Trainer or through ours; save the weights.

Used by test_same_math.py, one fresh process per side running every case, and by
bench/train_throughput.py, which also reads the `train seconds:` lines (the training call alone).
Usage: same_math.py upstream|ours OUT_PREFIX [CASE ...]   (cases: accum1, accum2, varied; default all)
       same_math.py upstream|ours OUT_PREFIX bench MODEL CLIPS
A case writes OUT_PREFIX-<case>.safetensors.
"""
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune.data import FrameBatches  # noqa: E402
from finetune.lock.builder import build_model  # noqa: E402
from finetune.lock.dataset import Clip, load_clips  # noqa: E402
from tests.helpers import VOCAB, loop_config, spec_of  # noqa: E402

CLIPS, SEED, LR, WARMUP = 6, 1234, 1e-3, 2
EMA = dict(beta=0.9, update_after_step=0, update_every=1)
# clips of different lengths, several to a batch: batch order (upstream's sampler's) now matters
VARIED = [200, 260, 330, 400, 480, 560]
CASES = {"accum1": (1, None), "accum2": (2, None), "varied": (1, VARIED)}


def clips_for(spec, n: int, lengths):
    demo = load_clips({"kind": "demo", "path": None}, spec)[0]
    if lengths is None:  # identical clips (the 500-frame demo clip), one per batch
        return [demo[0]] * n, demo[0].frames, 1
    clip = demo[1]  # the longer demo clip (634 frames), cut to each length
    cut = [Clip(f"{clip.where}:{n}", clip.audio, clip.text, clip.tokens, n, clip.mel[:, :n].contiguous()) for n in lengths]
    return cut, 800, 4


def run(side: str, out: str, accum: int, lengths=None, model_name: str = "f5tts_tiny", n: int = CLIPS) -> None:
    spec = spec_of(model_name)
    torch.manual_seed(0)
    model = build_model(spec, VOCAB)
    clips, frames_per_batch, max_samples = clips_for(spec, n, lengths)
    updates = -(-len(FrameBatches([c.frames for c in clips], frames_per_batch, max_samples, SEED)) // accum)
    with tempfile.TemporaryDirectory() as tmp:
        if side == "upstream":
            from f5_tts.model import Trainer

            class Clips(torch.utils.data.Dataset):
                def __len__(self):
                    return len(clips)

                def __getitem__(self, i):
                    return {"mel_spec": clips[i].mel, "text": clips[i].tokens}

                def get_frame_len(self, i):
                    return clips[i].frames

            trainer = Trainer(model, epochs=1, learning_rate=LR, num_warmup_updates=WARMUP, save_per_updates=10**6,
                              checkpoint_path=tmp, batch_size_per_gpu=frames_per_batch, batch_size_type="frame",
                              max_samples=max_samples, grad_accumulation_steps=accum, max_grad_norm=1.0, logger=None,
                              ema_kwargs=EMA)
            torch.manual_seed(SEED)
            random.seed(SEED)
            started = time.perf_counter()
            trainer.train(Clips(), num_workers=1, resumable_with_seed=SEED)
            seconds = time.perf_counter() - started
            online = trainer.accelerator.unwrap_model(trainer.model).state_dict()
            ema = trainer.ema_model.ema_model.state_dict()
        else:
            from finetune.lock.checkpoints import list_checkpoints, load_weights
            from finetune.train import Trainer, make_accelerator

            cfg = loop_config({"epochs": 1, "save_every": 10**6, "log_every": 10**6, "seed": SEED, "ema": EMA},
                              {"lr": LR, "weight_decay": 0.01, "warmup_updates": WARMUP, "max_grad_norm": 1.0,
                               "grad_accumulation_steps": accum},
                              {"frames_per_batch": frames_per_batch, "max_samples": max_samples})
            accelerator = make_accelerator(cfg)
            torch.manual_seed(SEED)
            random.seed(SEED)
            # Upstream's DataLoader draws one number from the global RNG when an epoch's iterator starts;
            # ours has a generator of its own (so resume is exact). Draw it here to line the streams up.
            torch.empty((), dtype=torch.int64).random_()
            started = time.perf_counter()
            result = Trainer(cfg, accelerator, model, clips, Path(tmp), {"sha256": "0" * 64}).fit()
            seconds = time.perf_counter() - started
            assert result["updates"] == updates
            last = list_checkpoints(tmp)[max(list_checkpoints(tmp))]
            online, ema = load_weights(last, "online"), load_weights(last, "ema")
        tensors = {f"online.{k}": v for k, v in online.items()} | {f"ema.{k}": v for k, v in ema.items()}
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, out)
    print(f"train seconds: {seconds:.4f} updates: {updates} frames: {sum(c.frames for c in clips)}")


if __name__ == "__main__":
    side, prefix, *rest = sys.argv[1:]
    if rest[:1] == ["bench"]:
        run(side, f"{prefix}.safetensors", 1, None, rest[1], int(rest[2]))
    else:
        for case in rest or CASES:
            run(side, f"{prefix}-{case}.safetensors", *CASES[case])
