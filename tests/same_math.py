"""Run a few updates of a tiny F5 model through upstream's Trainer or through ours; save the weights.

Used by test_same_math.py in a fresh process per side. Usage: same_math.py upstream|ours OUT ACCUM
"""
import random
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune.builder import build_model  # noqa: E402
from finetune.data import load_clips  # noqa: E402
from tests.test_builder import VOCAB, spec_of  # noqa: E402

CLIPS, SEED, LR, WARMUP = 6, 1234, 1e-3, 2
EMA = dict(beta=0.9, update_after_step=0, update_every=1)


def main(side: str, out: str, accum: int) -> None:
    spec = spec_of("f5tts_tiny")
    torch.manual_seed(0)
    model = build_model(spec, VOCAB)
    clip = load_clips({"kind": "demo"}, spec)[0]
    frames = clip.frames
    with tempfile.TemporaryDirectory() as tmp:
        if side == "upstream":
            from f5_tts.model import Trainer

            class Same(torch.utils.data.Dataset):  # identical clips: batch order cannot matter
                def __len__(self):
                    return CLIPS

                def __getitem__(self, i):
                    return {"mel_spec": clip.mel, "text": clip.tokens}

                def get_frame_len(self, i):
                    return frames

            trainer = Trainer(model, epochs=1, learning_rate=LR, num_warmup_updates=WARMUP, save_per_updates=10**6,
                              checkpoint_path=tmp, batch_size_per_gpu=frames, batch_size_type="frame", max_samples=1,
                              grad_accumulation_steps=accum, max_grad_norm=1.0, logger=None, ema_kwargs=EMA)
            torch.manual_seed(SEED)
            random.seed(SEED)
            trainer.train(Same(), num_workers=1, resumable_with_seed=SEED)
            online = trainer.accelerator.unwrap_model(trainer.model).state_dict()
            ema = trainer.ema_model.ema_model.state_dict()
        else:
            from finetune.checkpoints import list_checkpoints, load_weights
            from finetune.train import make_accelerator, train

            cfg = {"train": {"epochs": 1, "max_updates": None, "save_every": 10**6, "keep_last_n": -1,
                             "log_every": 10**6, "seed": SEED, "mixed_precision": "no", "num_workers": 0, "ema": EMA},
                   "optim": {"lr": LR, "weight_decay": 0.01, "warmup_updates": WARMUP, "max_grad_norm": 1.0,
                             "grad_accumulation_steps": accum},
                   "data": {"frames_per_batch": frames, "max_samples": 1},
                   "logger": {"kind": "none", "project": "x"}}
            accelerator = make_accelerator(cfg)
            torch.manual_seed(SEED)
            random.seed(SEED)
            # Upstream's DataLoader draws one number from the global RNG when an epoch's iterator starts;
            # ours has a generator of its own (so resume is exact). Draw it here to line the streams up.
            torch.empty((), dtype=torch.int64).random_()
            train(cfg, accelerator, model, [clip] * CLIPS, Path(tmp), {"sha256": "0" * 64})
            last = list_checkpoints(tmp)[max(list_checkpoints(tmp))]
            online, ema = load_weights(last, "online"), load_weights(last, "ema")
        tensors = {f"online.{k}": v for k, v in online.items()} | {f"ema.{k}": v for k, v in ema.items()}
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
