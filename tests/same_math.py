"""Run a few updates of a tiny F5 model through upstream's Trainer or through ours; save the weights.

Used by test_same_math.py in a fresh process per side, and by bench/train_throughput.py, which also
reads the `train seconds:` line (the training call alone, no start-up).
Usage: same_math.py upstream|ours OUT ACCUM [MODEL] [CLIPS]
"""
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune.lock.builder import build_model  # noqa: E402
from finetune.data import load_clips  # noqa: E402
from tests.test_builder import VOCAB, spec_of  # noqa: E402

CLIPS, SEED, LR, WARMUP = 6, 1234, 1e-3, 2
EMA = dict(beta=0.9, update_after_step=0, update_every=1)


def loop_config(train: dict, optim: dict, data: dict) -> dict:
    """What finetune.train.train reads, the schema's defaults filled in for every key not given
    (also used by the benchmarks that call the loop directly)."""
    from omegaconf import OmegaConf

    from finetune.lock.schema import OptimConfig, TrainConfig

    def section(schema, values):
        return OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), values), enum_to_str=True)

    return {"train": section(TrainConfig, train), "optim": section(OptimConfig, optim), "data": data,
            "logger": {"kind": "none", "project": "x"}}


def main(side: str, out: str, accum: int, model_name: str = "f5tts_tiny", clips: int = CLIPS) -> None:
    spec = spec_of(model_name)
    torch.manual_seed(0)
    model = build_model(spec, VOCAB)
    clip = load_clips({"kind": "demo"}, spec)[0][0]
    frames = clip.frames
    with tempfile.TemporaryDirectory() as tmp:
        if side == "upstream":
            from f5_tts.model import Trainer

            class Same(torch.utils.data.Dataset):  # identical clips: batch order cannot matter
                def __len__(self):
                    return clips

                def __getitem__(self, i):
                    return {"mel_spec": clip.mel, "text": clip.tokens}

                def get_frame_len(self, i):
                    return frames

            trainer = Trainer(model, epochs=1, learning_rate=LR, num_warmup_updates=WARMUP, save_per_updates=10**6,
                              checkpoint_path=tmp, batch_size_per_gpu=frames, batch_size_type="frame", max_samples=1,
                              grad_accumulation_steps=accum, max_grad_norm=1.0, logger=None, ema_kwargs=EMA)
            torch.manual_seed(SEED)
            random.seed(SEED)
            started = time.perf_counter()
            trainer.train(Same(), num_workers=1, resumable_with_seed=SEED)
            seconds = time.perf_counter() - started
            online = trainer.accelerator.unwrap_model(trainer.model).state_dict()
            ema = trainer.ema_model.ema_model.state_dict()
        else:
            from finetune.lock.checkpoints import list_checkpoints, load_weights
            from finetune.train import make_accelerator, train

            cfg = loop_config({"epochs": 1, "save_every": 10**6, "log_every": 10**6, "seed": SEED, "ema": EMA},
                              {"lr": LR, "weight_decay": 0.01, "warmup_updates": WARMUP, "max_grad_norm": 1.0,
                               "grad_accumulation_steps": accum},
                              {"frames_per_batch": frames, "max_samples": 1})
            accelerator = make_accelerator(cfg)
            torch.manual_seed(SEED)
            random.seed(SEED)
            # Upstream's DataLoader draws one number from the global RNG when an epoch's iterator starts;
            # ours has a generator of its own (so resume is exact). Draw it here to line the streams up.
            torch.empty((), dtype=torch.int64).random_()
            started = time.perf_counter()
            train(cfg, accelerator, model, [clip] * clips, Path(tmp), {"sha256": "0" * 64})
            seconds = time.perf_counter() - started
            last = list_checkpoints(tmp)[max(list_checkpoints(tmp))]
            online, ema = load_weights(last, "online"), load_weights(last, "ema")
        tensors = {f"online.{k}": v for k, v in online.items()} | {f"ema.{k}": v for k, v in ema.items()}
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, out)
    print(f"train seconds: {seconds:.4f} updates: {clips // accum} frames: {clips * frames}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5], *map(int, sys.argv[5:6]))
