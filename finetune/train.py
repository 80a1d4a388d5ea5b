"""The training loop: upstream's CFM objective under accelerate, with EMA, checkpoints and exact resume."""
import math
import os
import random
import sys

import torch

from .lock.checkpoints import list_checkpoints, save_checkpoint, save_train_state, state_path
from .data import ClipDataset, FrameBatches, collate
from .lock.errors import UserError
from .loggers import RunLogger


def lr_factor(update: int, warmup: int, total: int) -> float:
    """Upstream's schedule in closed form: linear warmup from ~0, then linear decay to ~0 at `total`.

    A pure function of the update count (the same on any number of processes), so a resumed run with
    an amended length simply follows it.
    """
    floor = 1e-8
    if update < warmup:
        return floor + (1 - floor) * update / warmup
    decay = max(total - warmup, 1)
    return 1 - (1 - floor) * min(update - warmup, decay) / decay


# accelerate launch (from its config file or --use_fsdp/--use_deepspeed) tells the processes through these
SHARDED_ENGINES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
                   "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
                   "ACCELERATE_USE_PARALLELISM_CONFIG": "Tensor/context parallelism"}


def set_lr(optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def make_accelerator(cfg: dict):
    from accelerate import Accelerator

    # Checkpoints, EMA and resume state are whole tensors on rank 0; under these engines they would be
    # shards (or a hang in a collective only rank 0 enters), so refuse before anything is written.
    for var, engine in SHARDED_ENGINES.items():
        if os.environ.get(var, "false").lower() == "true":
            raise UserError(f"{engine} is not supported ({var}=true from accelerate launch): launch plain data "
                            "parallel instead (accelerate launch --multi_gpu, or torchrun); see README, "
                            "'Several processes'")

    from accelerate.state import AcceleratorState, GradientState

    # a Hydra sweep runs its jobs in one process, and accelerate keeps its settings in process-wide state
    # that refuses a second mixed_precision; the process group (PartialState) stays
    AcceleratorState._reset_state()
    GradientState._reset_state()
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


def train(cfg, accelerator, model, clips, run_dir, manifest, state=None, ema_weights=None, samples=None):
    """Train from scratch (state=None) or continue from a saved training state; samples: a SampleWriter
    (rank 0, train.log_samples=true)."""
    from ema_pytorch import EMA
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
    # no scheduler object: accelerate steps a prepared one once per process per update, which would run
    # the schedule N times too fast on N processes; the rate is set from the update count instead
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    update, epoch, skip = 0, 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.step.copy_(state["ema_step"])
            ema.initted.copy_(state["ema_initted"])
        if accelerator.scaler is not None and "grad_scaler" in state:  # fp16 on GPUs
            accelerator.scaler.load_state_dict(state["grad_scaler"])
        update, epoch, skip = state["update"], state["epoch"], state["batches_in_epoch"]
        restore_rng(state, accelerator.process_index)
    lr = set_lr(optimizer, ocfg["lr"] * lr_factor(update, warmup, total))  # after a resume: amended optim.lr too

    logger = RunLogger(cfg["logger"]["kind"], run_dir, manifest, cfg["logger"]["project"]) \
        if accelerator.is_main_process else None
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
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            update += 1
            loss_value = accelerator.gather(loss.detach()).mean().item()
            lr = set_lr(optimizer, ocfg["lr"] * lr_factor(update, warmup, total))
            save_now = update % tcfg["save_every"] == 0 or update == total
            rng = rng_states(accelerator) if save_now else None  # a collective: every rank takes part
            if accelerator.is_main_process:
                ema.update()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                if update % tcfg["log_every"] == 0 or update == total:
                    logger.log({"loss": loss_value, "lr": lr, "grad_norm": float(grad_norm)}, update)
                    log_file.write(f"update {update} epoch {epoch} loss {loss_value:.6f} lr {lr:.3e} "
                                   f"grad_norm {float(grad_norm):.4f}\n")
                    log_file.flush()
                if save_now:
                    _save(run_dir, manifest, update, epoch, seen, accelerator, model, ema, optimizer, rng)
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


def rng_states(accelerator) -> dict:
    """Every rank's torch RNG states, one row per rank. Each rank draws its own noise (its batches
    differ in size), so an exact resume gives each rank back its own row."""
    states = {"rng_torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["rng_cuda"] = torch.cuda.get_rng_state()
    return {key: accelerator.gather(value.to(accelerator.device)[None]).cpu() for key, value in states.items()}


def restore_rng(state: dict, rank: int) -> None:
    # rank % rows: a resume on another number of processes cannot be exact anyway (the batches change)
    # clone: set_rng_state misreads a row view into a larger tensor ("Invalid mt19937 state")
    rows = torch.atleast_2d(state["rng_torch"])  # one row per rank (a single row before rank rows existed)
    torch.set_rng_state(rows[rank % len(rows)].clone())
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng_cuda"][rank % len(state["rng_cuda"])].clone())
    random.setstate(_python_rng(state["rng_python"]))


def _save(run_dir, manifest, update, epoch, seen, accelerator, model, ema, optimizer, rng):
    # the training state first: a weights file is only ever listed once its state is complete
    save_train_state(run_dir, update, {
        "update": update, "epoch": epoch, "batches_in_epoch": seen,
        "optimizer": optimizer.state_dict(),
        "ema_step": ema.step.clone(), "ema_initted": ema.initted.clone(),
        **rng, "rng_python": list(random.getstate()),
        **({"grad_scaler": accelerator.scaler.state_dict()} if accelerator.scaler is not None else {}),
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
