"""The training loop: upstream's CFM objective under accelerate, with EMA, checkpoints and exact resume.

Shaped like a torchtune recipe: `Trainer(...)` sets up model, optimizer, data and EMA; `restore()` puts a
saved state back; `fit()` is the loop; `save()` writes a checkpoint. Progress (update, epoch, batches seen)
is a small dataclass saved beside the optimizer state.
"""
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass

import torch

from .data import ClipDataset, FrameBatches, collate
from .lock.adapter import ema_copy, has_adapter, load_trained, trained_state
from .lock.layouts import adapter_keys
from .lock.checkpoints import header, list_checkpoints, save_checkpoint, save_train_state, state_path
from .lock.errors import UserError, first_line
from .loggers import RunLogger
from .memory import OOM_ADVICE, is_oom, peak_mb, reset_peak
from .runfolder import METRICS, now, write_status

# accelerate launch (from its config file or --use_fsdp/--use_deepspeed) tells the processes through these
SHARDED_ENGINES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
                   "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
                   "ACCELERATE_USE_PARALLELISM_CONFIG": "Tensor/context parallelism"}


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


def make_accelerator(cfg: dict):
    from accelerate import Accelerator

    # Checkpoints, EMA and resume state are whole tensors on rank 0; under these engines they would be
    # shards (or a hang in a collective only rank 0 enters), so refuse before anything is written.
    for var, engine in SHARDED_ENGINES.items():
        if os.environ.get(var, "false").lower() == "true":
            raise UserError(f"{engine} is not supported ({var}=true from accelerate launch): launch plain data "
                            "parallel instead (accelerate launch --multi_gpu, or torchrun); see README, "
                            "'Several processes'", code="config")

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
            raise UserError("optim.name=adamw8bit needs bitsandbytes (pip install bitsandbytes); or use optim.name=adamw", code="config")
        return bitsandbytes.optim.AdamW8bit
    from torch.optim import AdamW

    return AdamW


@dataclass
class Progress:
    update: int = 0
    epoch: int = 0
    seen: int = 0  # batches of the current epoch trained on
    seconds: float = 0.0  # training time so far, over every process that trained this run
    best_val: float = math.inf  # the lowest held-out loss so far (train.early_stop, keep_last_n)
    stale: int = 0  # validations since it last improved by train.early_stop.min_delta


class NonFinite(UserError):
    code = "nonfinite"


class Trainer:
    def __init__(self, cfg, accelerator, model, clips, run_dir, manifest, samples=None, held=(), ema_start=None):
        """Set up: batches, data loader, EMA (rank 0), optimizer, schedule; `samples`: a SampleWriter
        (rank 0, train.log_samples=true); `held`: the held-out clips that rank 0 validates on; `ema_start`:
        the pretrained file's EMA weights and counters (step, initted) to continue, as upstream's Trainer does."""
        self.cfg, self.accelerator, self.run_dir, self.manifest, self.samples = cfg, accelerator, run_dir, manifest, samples
        self.held = list(held)
        tcfg, ocfg, dcfg = cfg["train"], cfg["optim"], cfg["data"]
        self.batches = FrameBatches([c.frames for c in clips], dcfg["frames_per_batch"], dcfg["max_samples"],
                                    tcfg["seed"])
        self.ema = None
        if accelerator.is_main_process:
            self.ema = make_ema(model, tcfg["ema"])
            self.ema.to(accelerator.device)
            if ema_start:
                self._set_ema(ema_start["weights"], ema_start.get("step"), ema_start.get("initted"))
        # a generator of its own: starting an epoch's iterator must not draw from the global RNG,
        # or a resumed run (which starts its iterator mid-epoch) would drift from an uninterrupted one
        loader = torch.utils.data.DataLoader(ClipDataset(clips), batch_sampler=self.batches, collate_fn=collate,
                                             num_workers=tcfg["num_workers"],
                                             generator=torch.Generator().manual_seed(tcfg["seed"]))
        per_epoch = max(math.ceil(len(self.batches) / accelerator.num_processes / ocfg["grad_accumulation_steps"]), 1)
        self.total = tcfg["max_updates"] or per_epoch * tcfg["epochs"]
        trained = [p for p in model.parameters() if p.requires_grad]  # all of them, or a LoRA run's adapter
        optimizer = optimizer_class(ocfg["name"])(trained, lr=ocfg["lr"], weight_decay=ocfg["weight_decay"])
        # no scheduler object: accelerate steps a prepared one once per process per update, which would run
        # the schedule N times too fast on N processes; the rate is set from the update count instead
        self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
        self.progress = Progress()
        self.stop_requested = False
        self.stop_reason = None  # why the run stopped before its planned end, for status.json

    # ---- restore ------------------------------------------------------------------------------------

    def restore(self, state: dict, ema_weights: dict) -> None:
        """Continue from a saved training state and the EMA weights saved with it."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self._set_ema(ema_weights, state["ema_step"], state["ema_initted"])
        if self.accelerator.scaler is not None and "grad_scaler" in state:  # fp16 on GPUs
            self.accelerator.scaler.load_state_dict(state["grad_scaler"])
        self.progress = Progress(state["update"], state["epoch"], state["batches_in_epoch"], state.get("seconds", 0.0),
                                 state.get("best_val", math.inf), state.get("stale", 0))
        if state.get("frames_per_batch", self.cfg["data"]["frames_per_batch"]) != self.cfg["data"]["frames_per_batch"] \
                or state.get("max_samples", self.cfg["data"]["max_samples"]) != self.cfg["data"]["max_samples"]:
            self.progress.seen = 0  # the batches of this epoch changed with the budget: it starts over
            print(f"note: the frame budget changed: epoch {self.progress.epoch} starts over with the new batches",
                  file=sys.stderr)
        restore_rng(state, self.accelerator.process_index)

    def _set_ema(self, weights: dict, step=None, initted=None) -> None:
        """The EMA's weights and, where known, its counters (absent: they stay at 0, and the EMA copies the
        model until ema.update_after_step)."""
        load_trained(self.ema.ema_model, weights)
        if step is not None:
            self.ema.step.copy_(step)
        if initted is not None:
            self.ema.initted.copy_(initted)

    # ---- the loop -----------------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train to the planned update, or until SIGTERM/SIGINT asks to stop (then save and return)."""
        a, p, cfg = self.accelerator, self.progress, self.cfg
        tcfg, ocfg = cfg["train"], cfg["optim"]
        main = a.is_main_process
        self.logger = RunLogger(cfg["logger"]["kind"], self.run_dir, self.manifest, cfg["logger"]["project"]) \
            if main else None
        if main:
            write_status(self.run_dir, "running", update=p.update, planned=self.total, started=now(), message=None)
        lr = self._set_lr(p.update)
        reset_peak(a.device)
        first_bad = torch.zeros((), dtype=torch.long, device=a.device)  # first non-finite update; 0: none yet
        loss = grad_norm = torch.zeros((), device=a.device)
        loss_value = float("nan")
        started, at_start = time.monotonic(), p.seconds
        state = "finished"
        self.model.train()
        with _stop_signals(self), _tqdm(self.total, p.update, main) as bar:
            try:
                while p.update < self.total:
                    self.batches.shuffle_for(p.epoch)
                    skip = p.seen
                    for batch in (a.skip_first_batches(self.loader, skip) if skip else self.loader):
                        p.seen += 1
                        with a.accumulate(self.model):
                            loss, _, _ = self.model(batch["mel"], text=batch["text"], lens=batch["lens"])
                            a.backward(loss)
                            if ocfg["max_grad_norm"] > 0 and a.sync_gradients:
                                grad_norm = a.clip_grad_norm_(self.model.parameters(), ocfg["max_grad_norm"])
                            self.optimizer.step()
                            self.optimizer.zero_grad()
                        if not a.sync_gradients:
                            continue
                        p.update += 1
                        # remembered on the device, read only at log and save updates: no sync every update
                        finite = torch.isfinite(loss.detach()) & torch.isfinite(torch.as_tensor(grad_norm, device=a.device))
                        first_bad = torch.where((first_bad == 0) & ~finite, p.update, first_bad)
                        lr = self._set_lr(p.update)
                        if main:
                            self.ema.update()
                            bar.update(1)
                        log_now = p.update % tcfg["log_every"] == 0 or p.update == self.total
                        stop = self._stop_agreed(log_now)
                        save_now = p.update % tcfg["save_every"] == 0 or p.update == self.total or stop
                        val_now = bool(self.held) and (save_now or bool(tcfg["val_every"]) and p.update % tcfg["val_every"] == 0)
                        log_now = log_now or val_now  # a validation always has its metrics line
                        if log_now or save_now:
                            self._check_finite(first_bad)
                            loss_value = a.gather(loss.detach()).mean().item()
                            p.seconds = at_start + time.monotonic() - started
                        val = self._validate(ema=save_now) if val_now and main else {}
                        if val and self._early_stop(val["val_loss"]) and a.num_processes == 1 and not stop:
                            stop = save_now = True  # several processes stop at the next log update, agreed
                        if log_now and main:
                            self._log(loss_value, lr, grad_norm, val)
                            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                        if save_now:
                            self.save(val)
                        if stop:
                            state = "stopped"
                            break
                        if p.update >= self.total:
                            break
                    if state == "stopped":
                        break
                    p.seen = 0
                    p.epoch += 1
            except BaseException as e:
                if is_oom(e):
                    e = UserError(self._oom_message(), code="memory")
                if main:
                    self.logger.close()
                    write_status(self.run_dir, "crashed", update=p.update,
                                 message=first_line(e, 300))
                raise e
        a.wait_for_everyone()
        if main:
            self.logger.close()
            with open(self.run_dir / "train.log", "a", encoding="utf-8") as log:
                log.write(f"{'stopped' if state == 'stopped' else 'done'}: {p.update} updates, "
                          f"final loss {loss_value:.6f}\n")
            write_status(self.run_dir, state, update=p.update, message=self.stop_reason if state == "stopped" else None)
        return {"updates": p.update, "loss": loss_value, "state": state}

    def _set_lr(self, update: int) -> float:
        lr = self.cfg["optim"]["lr"] * lr_factor(update, self.cfg["optim"]["warmup_updates"], self.total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _early_stop(self, val_loss: float) -> bool:
        """Count this validation against train.early_stop; True when the run should stop here."""
        p, es = self.progress, self.cfg["train"]["early_stop"]
        if val_loss < p.best_val - es["min_delta"]:
            p.best_val, p.stale = val_loss, 0
        else:
            p.best_val, p.stale = min(p.best_val, val_loss), p.stale + 1
        if es["patience"] and p.stale >= es["patience"] and not self.stop_requested:
            self.stop_requested = True
            self.stop_reason = (f"early stop at update {p.update}: {p.stale} validations without the held-out loss "
                                f"improving on {p.best_val:.6f} by {es['min_delta']} (train.early_stop.patience="
                                f"{es['patience']})")
            print(f"\n{self.stop_reason}", file=sys.stderr)
        return self.stop_requested

    def _stop_agreed(self, log_now: bool) -> bool:
        """One process: stop when asked. Several: they agree at log updates (a collective), so that all
        stop after the same update."""
        if self.accelerator.num_processes == 1:
            return self.stop_requested
        if not log_now:
            return False
        flags = self.accelerator.gather(torch.tensor([self.stop_requested], device=self.accelerator.device))
        return bool(flags.any())

    def _check_finite(self, first_bad: torch.Tensor) -> None:
        bad = self.accelerator.gather(first_bad[None])
        bad = bad[bad > 0]
        if len(bad):
            saved = list_checkpoints(self.run_dir)
            last = f"its last good checkpoint is update {max(saved)}" if saved else "it saved no checkpoint"
            raise NonFinite(f"update {int(bad.min())}: the loss or gradient is not finite (nan or inf); training "
                            f"stopped without saving it and {last}; lower optim.lr= or check the data, then "
                            f"resume={self.run_dir}")

    def _validate(self, ema: bool) -> dict:
        """Validation loss of the online weights (and at checkpoints, of the EMA weights) on the held-out clips."""
        from .media.validation import validation_loss

        seed = self.cfg["train"]["seed"]
        val = {"val_loss": validation_loss(self.accelerator.unwrap_model(self.model), self.held, seed)}
        if ema:
            val["val_loss_ema"] = validation_loss(self.ema.ema_model, self.held, seed)
        return val

    def _log(self, loss_value: float, lr: float, grad_norm, val: dict) -> None:
        import json

        p = self.progress
        metrics = {"loss": loss_value, "lr": lr, "grad_norm": float(grad_norm), **val,
                   **peak_mb(self.accelerator.device)}
        reset_peak(self.accelerator.device)  # each log's memory is the peak since the one before
        self.logger.log(metrics, p.update)
        with open(self.run_dir / "train.log", "a", encoding="utf-8") as log:
            log.write(f"update {p.update} epoch {p.epoch} loss {loss_value:.6f} lr {lr:.3e} "
                      f"grad_norm {float(grad_norm):.4f}\n")
        with open(self.run_dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps({"update": p.update, "epoch": p.epoch, **metrics, "seconds": round(p.seconds, 3)}) + "\n")
        write_status(self.run_dir, "running", update=p.update)

    def _oom_message(self) -> str:
        peak = peak_mb(self.accelerator.device)["memory_mb"]
        saved = list_checkpoints(self.run_dir)
        last = f"the last complete checkpoint (update {max(saved)}) is intact" if saved else "no checkpoint was saved yet"
        return (f"out of memory at update {self.progress.update + 1} with data.frames_per_batch="
                f"{self.cfg['data']['frames_per_batch']} (peak {peak:.0f} MB in use); {last}; try {OOM_ADVICE}, "
                f"then resume={self.run_dir} with the new setting")

    # ---- save ---------------------------------------------------------------------------------------

    def save(self, val: dict | None = None) -> None:
        """Write a checkpoint at the current update (every rank takes part: the RNG states are gathered);
        `val`: validation losses, kept in the checkpoint's metadata."""
        a, p = self.accelerator, self.progress
        rng = rng_states(a)
        if not a.is_main_process:
            return
        dcfg = self.cfg["data"]
        # the training state first: a weights file is only ever listed once its state is complete
        save_train_state(self.run_dir, p.update, {
            "update": p.update, "epoch": p.epoch, "batches_in_epoch": p.seen, "seconds": p.seconds,
            "best_val": p.best_val, "stale": p.stale,
            "frames_per_batch": dcfg["frames_per_batch"], "max_samples": dcfg["max_samples"],
            "optimizer": self.optimizer.state_dict(),
            "ema_step": self.ema.step.clone(), "ema_initted": self.ema.initted.clone(),
            **rng, "rng_python": list(random.getstate()),
            **({"grad_scaler": a.scaler.state_dict()} if a.scaler is not None else {}),
        })
        online = trained_state(a.unwrap_model(self.model))  # a LoRA run saves its adapter alone
        save_checkpoint(self.run_dir, p.update, online, trained_state(self.ema.ema_model), self.manifest["sha256"], val)
        prune(self.run_dir, self.cfg["train"]["keep_last_n"], best_checkpoint(self.run_dir))
        if self.samples is not None:
            gen, ref, _ = self.samples(self.ema.ema_model, self.run_dir, p.update, self.cfg["train"]["seed"])
            self.logger.audio({"sample/generated": gen, "sample/reference": ref}, p.update)


def make_ema(model, ecfg: dict):
    """The EMA of the trained weights (ema_pytorch, online model kept outside it). A LoRA run's EMA model
    shares the frozen base with the online model and averages the adapter alone: it costs the adapter's size."""
    from ema_pytorch import EMA

    settings = dict(include_online_model=False, beta=ecfg["beta"], update_after_step=ecfg["update_after_step"],
                    update_every=ecfg["update_every"])
    if not has_adapter(model):
        return EMA(model, **settings)
    ema = EMA(model, ema_model=ema_copy(model), **settings)
    # the tensors it copies and averages: the adapter's (the base is the same tensor on both sides)
    ema.parameter_names = set(adapter_keys(n for n, _ in model.named_parameters()))
    ema.buffer_names = set()
    return ema


class _stop_signals:
    """SIGTERM and SIGINT set trainer.stop_requested: the loop finishes its update, saves and returns.
    A second signal gets the default behaviour back (a second Ctrl-C ends the process at once)."""

    def __init__(self, trainer):
        self.trainer, self.saved = trainer, {}

    def _handle(self, signum, frame):
        self.trainer.stop_requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this update, with a checkpoint", file=sys.stderr)
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _tqdm(total: int, initial: int, main: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="fine-tune", disable=not main, file=sys.stderr)


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


def best_checkpoint(run_dir) -> int | None:
    """The update of the checkpoint with the lowest held-out loss (its metadata's val_loss); None without one."""
    losses = {}
    for update, path in list_checkpoints(run_dir).items():
        try:
            losses[update] = float(header(path)[1]["val_loss"])
        except (UserError, KeyError, ValueError):
            continue
    return min(losses, key=lambda u: (losses[u], u)) if losses else None


def prune(run_dir, keep: int, best: int | None = None) -> None:
    """Keep the newest `keep` checkpoints (-1: all), and the one with the best held-out loss (`best`);
    called only after the newest is complete."""
    if keep < 0:
        return
    for update, path in list(list_checkpoints(run_dir).items())[:-keep or None]:
        if update == best:
            continue
        path.unlink(missing_ok=True)  # weights first: a listed checkpoint always has its state
        state_path(run_dir, update).unlink(missing_ok=True)

