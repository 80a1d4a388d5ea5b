"""The training loop: upstream's CFM objective under accelerate, with EMA, checkpoints and exact resume."""
import math
import os
import random
import sys

import torch

from .checkpoints import list_checkpoints, save_checkpoint, save_train_state, state_path
from .data import ClipDataset, FrameBatches, collate
from .errors import UserError
from .loggers import RunLogger


def lr_factor(update: int, warmup: int, total: int) -> float:
    """Upstream's schedule in closed form: linear warmup from ~0, then linear decay to ~0 at `total`.

    A pure function of the update count, so a resumed run with an amended length simply follows it.
    """
    floor = 1e-8
    if update < warmup:
        return floor + (1 - floor) * update / warmup
    decay = max(total - warmup, 1)
    return 1 - (1 - floor) * min(update - warmup, decay) / decay


# accelerate launch (from its config file or --use_fsdp/--use_deepspeed) tells the processes through these
SHARDED_ENGINES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
                   "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM"}


def make_accelerator(cfg: dict):
    from accelerate import Accelerator

    # Checkpoints, EMA and resume state are whole tensors on rank 0; under these engines they would be
    # shards (or a hang in a collective only rank 0 enters), so refuse before anything is written.
    for var, engine in SHARDED_ENGINES.items():
        if os.environ.get(var, "false").lower() == "true":
            raise UserError(f"{engine} is not supported ({var}=true from accelerate launch): launch plain data "
                            "parallel instead (accelerate launch --multi_gpu, or torchrun); see README, "
                            "'Several processes'")

    # cpu=True without CUDA: it is what makes accelerate run several CPU processes (gloo) as one job
    return Accelerator(mixed_precision=cfg["train"]["mixed_precision"], cpu=not torch.cuda.is_available(),
                       gradient_accumulation_steps=cfg["optim"]["grad_accumulation_steps"])


def optimizer_class(name: str):
    if name == "adamw8bit":
        try:
            import bitsandbytes
        except ImportError:
            raise UserError("optim.name=adamw8bit needs bitsandbytes (pip install bitsandbytes); or use optim.name=adamw")
        return bitsandbytes.optim.AdamW8bit
    from torch.optim import AdamW

    return AdamW


def train(cfg, accelerator, model, clips, run_dir, manifest, state=None, ema_weights=None):
    """Train from scratch (state=None) or continue from a saved training state."""
    from ema_pytorch import EMA
    from torch.optim.lr_scheduler import LambdaLR
    from tqdm import tqdm

    tcfg, ocfg, dcfg = cfg["train"], cfg["optim"], cfg["data"]
    batches = FrameBatches([c.frames for c in clips], dcfg["frames_per_batch"], dcfg["max_samples"], tcfg["seed"])
    ema = None
    if accelerator.is_main_process:
        ema = EMA(model, include_online_model=False, beta=tcfg["ema"]["beta"],
                  update_after_step=tcfg["ema"]["update_after_step"], update_every=tcfg["ema"]["update_every"])
        if ema_weights is not None:
            ema.ema_model.load_state_dict(ema_weights, strict=True)
        ema.to(accelerator.device)

    # a generator of its own: starting an epoch's iterator must not draw from the global RNG,
    # or a resumed run (which starts its iterator mid-epoch) would drift from an uninterrupted one
    loader = torch.utils.data.DataLoader(ClipDataset(clips), batch_sampler=batches, collate_fn=collate,
                                         num_workers=tcfg["num_workers"],
                                         generator=torch.Generator().manual_seed(tcfg["seed"]))
    accum = ocfg["grad_accumulation_steps"]
    per_epoch = max(math.ceil(len(batches) / accelerator.num_processes / accum), 1)
    total = tcfg["max_updates"] or per_epoch * tcfg["epochs"]
    warmup = ocfg["warmup_updates"]
    optimizer = optimizer_class(ocfg["name"])(model.parameters(), lr=ocfg["lr"], weight_decay=ocfg["weight_decay"])
    scheduler = LambdaLR(optimizer, lambda u: lr_factor(u, warmup, total))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    update, epoch, skip = 0, 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.scheduler.last_epoch = state["update"]
        for group in optimizer.param_groups:  # an amended optim.lr takes effect from here on
            group["initial_lr"] = ocfg["lr"]
            group["lr"] = ocfg["lr"] * lr_factor(state["update"], warmup, total)
        scheduler.scheduler.base_lrs = [ocfg["lr"]] * len(optimizer.param_groups)
        if ema is not None:
            ema.step.copy_(state["ema_step"])
            ema.initted.copy_(state["ema_initted"])
        update, epoch, skip = state["update"], state["epoch"], state["batches_in_epoch"]
        torch.set_rng_state(state["rng_torch"])
        random.setstate(_python_rng(state["rng_python"]))

    logger = RunLogger(cfg["logger"]["kind"], run_dir, manifest, cfg["logger"]["project"]) \
        if accelerator.is_main_process else None
    samples = None
    if tcfg["log_samples"] and accelerator.is_main_process:
        from .samples import SampleWriter

        samples = SampleWriter(cfg, manifest, clips[0], accelerator.device)
    log_file = open(run_dir / "train.log", "a", encoding="utf-8") if accelerator.is_main_process else None
    bar = tqdm(total=total, initial=update, desc="fine-tune", disable=not accelerator.is_main_process,
               file=sys.stderr)
    loss_value = grad_norm = float("nan")
    model.train()
    while update < total:
        batches.set_epoch(epoch)
        seen = skip
        for batch in (accelerator.skip_first_batches(loader, skip) if skip else loader):
            seen += 1
            with accelerator.accumulate(model):
                loss, _, _ = model(batch["mel"], text=batch["text"], lens=batch["lens"])
                accelerator.backward(loss)
                if ocfg["max_grad_norm"] > 0 and accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), ocfg["max_grad_norm"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            update += 1
            loss_value = accelerator.gather(loss.detach()).mean().item()
            lr = scheduler.get_last_lr()[0]
            if accelerator.is_main_process:
                ema.update()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                if update % tcfg["log_every"] == 0 or update == total:
                    logger.log({"loss": loss_value, "lr": lr, "grad_norm": float(grad_norm)}, update)
                    log_file.write(f"update {update} epoch {epoch} loss {loss_value:.6f} lr {lr:.3e} "
                                   f"grad_norm {float(grad_norm):.4f}\n")
                    log_file.flush()
                if update % tcfg["save_every"] == 0 or update == total:
                    _save(run_dir, manifest, update, epoch, seen, accelerator, model, ema, optimizer)
                    prune(run_dir, tcfg["keep_last_n"])
                    if samples is not None:
                        gen, ref, _ = samples(ema.ema_model, run_dir, update, tcfg["seed"])
                        logger.audio({"sample/generated": gen, "sample/reference": ref}, update)
            if update >= total:
                break
        skip = 0
        epoch += 1
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        logger.close()
        log_file.write(f"done: {update} updates, final loss {loss_value:.6f}\n")
        log_file.close()


def _python_rng(saved):
    # torch.save turns the state's tuples into lists; random.setstate wants them back
    version, internal, gauss = saved
    return version, tuple(internal), gauss


def _save(run_dir, manifest, update, epoch, seen, accelerator, model, ema, optimizer):
    # the training state first: a weights file is only ever listed once its state is complete
    save_train_state(run_dir, update, {
        "update": update, "epoch": epoch, "batches_in_epoch": seen,
        "optimizer": optimizer.state_dict(),
        "ema_step": ema.step.clone(), "ema_initted": ema.initted.clone(),
        "rng_torch": torch.get_rng_state(), "rng_python": list(random.getstate()),
    })
    online = accelerator.unwrap_model(model).state_dict()
    save_checkpoint(run_dir, update, online, ema.ema_model.state_dict(), manifest["sha256"])


def prune(run_dir, keep: int) -> None:
    """Keep the newest `keep` checkpoints (-1: all); called only after the newest is complete."""
    if keep < 0:
        return
    for update, path in list(list_checkpoints(run_dir).items())[:-keep or None]:
        path.unlink(missing_ok=True)  # weights first: a listed checkpoint always has its state
        state_path(run_dir, update).unlink(missing_ok=True)
