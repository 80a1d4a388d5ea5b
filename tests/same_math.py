"""Run a few updates of a tiny F5 model through upstream's Trainer or through ours; save the weights.

Used by test_same_math.py, one fresh process per side running every case, and by
bench/train_throughput.py, which also reads the `train seconds:` lines (the training call alone).
Usage: same_math.py upstream|ours OUT_PREFIX [CASE ...]   (cases: see CASES; default all)
       same_math.py upstream|ours OUT_PREFIX bench MODEL CLIPS
A case writes OUT_PREFIX-<case>.safetensors.
"""
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune.data import FrameBatches  # noqa: E402
from finetune.lock.builder import build_model  # noqa: E402
from finetune.media.dataset import Clip, load_clips  # noqa: E402
from bench.makers import VOCAB, loop_config, spec_of  # noqa: E402

CLIPS, SEED, LR, WARMUP = 6, 1234, 1e-3, 2
EMA = dict(beta=0.9, update_after_step=0, update_every=1)
# clips of different lengths, several to a batch: batch order (upstream's sampler's) now matters
VARIED = [200, 260, 330, 400, 480, 560]
# case: (grad accumulation, clip lengths, epochs, pretrained file: none, hub (EMA weights and counters) or
# trainer (upstream's model_N.pt: online and EMA weights, EMA counters))
CASES = {"accum1": (1, None, 1, None), "accum2": (2, VARIED, 3, None), "varied": (1, VARIED, 3, None),
         "hub": (1, VARIED, 2, "hub"), "trainer": (2, VARIED, 2, "trainer")}
PRETRAINED_STEP = 5  # the file's EMA counter: below EMA's update_after_step the EMA would copy, above it averages


def clips_for(spec, n: int, lengths):
    demo = load_clips({"kind": "demo", "path": None}, spec)[0]
    if lengths is None:  # identical clips (the 500-frame demo clip), one per batch
        return [demo[0]] * n, demo[0].frames, 1
    clip = demo[1]  # the longer demo clip (634 frames), cut to each length
    cut = [Clip(f"{clip.where}:{n}", clip.audio, clip.text, clip.tokens, n, clip.mel[:, :n].contiguous()) for n in lengths]
    return cut, 800, 4


def ema_state(spec, seed: int) -> dict:
    """Upstream's EMA state dict (ema_model.* and the counters), weights drawn from `seed`."""
    torch.manual_seed(seed)
    sd = build_model(spec, VOCAB).state_dict()
    return {**{f"ema_model.{k}": v.contiguous() for k, v in sd.items()},
            "initted": torch.tensor(True), "step": torch.tensor(PRETRAINED_STEP)}


def pretrained_file(spec, folder: Path, kind: str, trainer=None, updates: int = 0) -> Path:
    """A file in upstream's layout, named as upstream's fine-tune finds it (pretrained_*). A trainer file
    carries online weights of their own, and for upstream's side a fresh optimizer and schedule at update 0:
    loading it is then a fine-tune start, which upstream's Trainer only does from the file's online weights
    in that branch."""
    if kind == "hub":
        path = folder / "pretrained_hub.safetensors"
        save_file(ema_state(spec, 99), str(path))
        return path
    torch.manual_seed(98)
    body = {"model_state_dict": build_model(spec, VOCAB).state_dict(), "ema_model_state_dict": ema_state(spec, 99),
            "update": 0}
    if trainer is not None:
        from torch.optim.lr_scheduler import LinearLR, SequentialLR

        opt = trainer.optimizer  # the schedule upstream's train() builds, so that its state loads as fresh
        schedule = SequentialLR(opt, [LinearLR(opt, 1e-8, 1.0, WARMUP), LinearLR(opt, 1.0, 1e-8, updates - WARMUP)],
                                milestones=[WARMUP])
        body |= {"optimizer_state_dict": opt.state_dict(), "scheduler_state_dict": schedule.state_dict()}
    path = folder / "pretrained_trainer.pt"
    torch.save(body, path)
    return path


def run(side: str, out: str, accum: int, lengths=None, epochs: int = 1, pretrained: str | None = None,
        model_name: str = "f5tts_tiny", n: int = CLIPS) -> None:
    spec = spec_of(model_name)
    torch.manual_seed(0)
    model = build_model(spec, VOCAB)
    clips, frames_per_batch, max_samples = clips_for(spec, n, lengths)
    updates = -(-len(FrameBatches([c.frames for c in clips], frames_per_batch, max_samples, SEED)) // accum) * epochs
    ema_kwargs = {**EMA, "update_after_step": 3} if pretrained else EMA
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

            trainer = Trainer(model, epochs=epochs, learning_rate=LR, num_warmup_updates=WARMUP,
                              save_per_updates=10**6, checkpoint_path=tmp, batch_size_per_gpu=frames_per_batch,
                              batch_size_type="frame", max_samples=max_samples, grad_accumulation_steps=accum,
                              max_grad_norm=1.0, logger=None, ema_kwargs=ema_kwargs)
            if pretrained:
                pretrained_file(spec, Path(tmp), pretrained, trainer, updates)
            torch.manual_seed(SEED)
            random.seed(SEED)
            started = time.perf_counter()
            trainer.train(Clips(), num_workers=1, resumable_with_seed=SEED)  # finds pretrained_*.safetensors in tmp
            seconds = time.perf_counter() - started
            online = trainer.accelerator.unwrap_model(trainer.model).state_dict()
            ema = trainer.ema_model.ema_model.state_dict()
        else:
            from finetune.lock.checkpoints import list_checkpoints, load_weights
            from finetune.runs import initial_model
            from finetune.train import Trainer, make_accelerator

            cfg = loop_config({"epochs": epochs, "save_every": 10**6, "log_every": 10**6, "seed": SEED,
                               "ema": ema_kwargs},
                              {"lr": LR, "weight_decay": 0.01, "warmup_updates": WARMUP, "max_grad_norm": 1.0,
                               "grad_accumulation_steps": accum},
                              {"frames_per_batch": frames_per_batch, "max_samples": max_samples})
            ema_start = None
            if pretrained:
                start = pretrained_file(spec, Path(tmp), pretrained)
                model, _, ema_start = initial_model(spec, VOCAB, str(start), model_name, 0, 0)
            accelerator = make_accelerator(cfg)
            torch.manual_seed(SEED)
            random.seed(SEED)
            with upstream_loader_draws(epochs):
                started = time.perf_counter()
                result = Trainer(cfg, accelerator, model, clips, Path(tmp), {"sha256": "0" * 64},
                                 ema_start=ema_start).fit()
                seconds = time.perf_counter() - started
            assert result["updates"] == updates
            last = list_checkpoints(tmp)[max(list_checkpoints(tmp))]
            online, ema = load_weights(last, "online"), load_weights(last, "ema")
        tensors = {f"online.{k}": v for k, v in online.items()} | {f"ema.{k}": v for k, v in ema.items()}
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, out)
    print(f"train seconds: {seconds:.4f} updates: {updates} frames: {sum(c.frames for c in clips)}")


@contextmanager
def upstream_loader_draws(epochs: int):
    """Upstream's DataLoaders draw one number from the global RNG when they first start an iterator (their
    workers' base seed); ours has a generator of its own, so that a resumed run matches an uninterrupted one.
    Upstream iterates two loaders (a skip_first_batches copy in the first epoch, then the loader itself; its
    persistent workers keep the iterator after that): draw as many here, at the same points."""
    torch.empty((), dtype=torch.int64).random_()
    plain = FrameBatches.shuffle_for

    def shuffle_for(self, epoch):
        if epoch == 1:
            torch.empty((), dtype=torch.int64).random_()
        plain(self, epoch)

    FrameBatches.shuffle_for = shuffle_for
    try:
        yield
    finally:
        FrameBatches.shuffle_for = plain


if __name__ == "__main__":
    side, prefix, *rest = sys.argv[1:]
    if rest[:1] == ["bench"]:
        run(side, f"{prefix}.safetensors", 1, None, model_name=rest[1], n=int(rest[2]))
    else:
        for case in rest or CASES:
            run(side, f"{prefix}-{case}.safetensors", *CASES[case])
