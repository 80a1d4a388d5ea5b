"""Memory: the peak a process reached since the last look, and data.frames_per_batch=auto, the largest frame
budget whose measured update fits the machine.

The budget is found by running real updates (forward, backward, optimizer step, with the run's precision,
activation checkpointing and optimizer) of a copy of the model on the dataset's longest clips at growing
budgets, before the run folder exists. The copy stands for the EMA model that rank 0 keeps during training (a LoRA
run's shares the frozen base, as its EMA model does).
accelerate's find_executable_batch_size is not used: it retries a training function after an out-of-memory
error, which on a CPU is not an error but swapping or the kernel's OOM killer, and on a GPU leaves the
choice to whatever failed first; measuring the peak and comparing it to a cap works on both.
"""
import sys

import torch

from .lock.adapter import ema_copy
from .lock.errors import UserError

OOM_ADVICE = ("data.frames_per_batch lower or auto, model.arch.checkpoint_activations=true, "
              "train.mixed_precision=bf16, optim.name=adamw8bit")


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def _trim() -> None:
    """Give the C allocator's free memory back to the kernel, so that resident size is memory in use: else
    an update can reuse what an earlier one freed and its peak would not show."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def reset_peak(device, trim: bool = False) -> None:
    """Start a new peak: CUDA's counters, or on Linux the kernel's peak resident size (VmHWM). trim=True
    first returns the allocator's free memory, for a probe that must see all it allocates; training's logs
    skip it, as a trim at every log cost a third of the CPU time of a tiny model's update here."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    if trim:
        _trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux: the peak stays the process's all-time peak
        pass


def in_use_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _status_kb("VmRSS") / 1024


def peak_mb(device) -> dict:
    """The peak since reset_peak(): allocated and reserved on CUDA, resident size on CPU."""
    if device.type == "cuda":
        return {"memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "memory_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20}
    return {"memory_mb": _status_kb("VmHWM") / 1024}


def free_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**20
    import psutil

    return psutil.virtual_memory().available / 2**20


def is_oom(e: BaseException) -> bool:
    """Out of memory, as each device says it: CUDA's error, the CPU allocator's, or Python's."""
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or \
        (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def _batch(clips, budget: int, max_samples: int):
    """The longest clips that fit one batch of `budget` frames: the worst batch training can meet."""
    from .data import collate

    chosen, frames = [], 0
    for clip in sorted(clips, key=lambda c: -c.frames):
        if frames + clip.frames <= budget and len(chosen) < max_samples:
            chosen.append(clip.with_mel())
            frames += clip.frames
    return collate(chosen)


def measure(model, clips, budget: int, cfg: dict, accelerator, optimizer_cls) -> float | None:
    """MB that training at `budget` frames adds to what the process holds before it: the EMA copy, the
    optimizer's state and one update's activations (None: out of memory)."""
    device = accelerator.device
    batch = _batch(clips, budget, cfg["data"]["max_samples"])
    reset_peak(device, trim=True)
    before = in_use_mb(device)
    probe = ema_copy(model).to(device).train()  # counted: it stands for the EMA copy rank 0 keeps
    optimizer = optimizer_cls([p for p in probe.parameters() if p.requires_grad], lr=1e-12)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), accelerator.autocast():
            loss, _, _ = probe(batch["mel"].to(device), text=batch["text"], lens=batch["lens"].to(device))
            loss.backward()
            optimizer.step()
        return peak_mb(device)["memory_mb"] - before
    except BaseException as e:
        if not is_oom(e):
            raise
        return None
    finally:
        del probe, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()


def choose_budget(model, clips, cfg: dict, accelerator, optimizer_cls) -> dict:
    """The largest frame budget whose update fits under the cap (train.memory_limit_mb, or
    train.memory_fraction of the free memory), every rank agreeing on the smallest."""
    tcfg = cfg["train"]
    device = accelerator.device
    limit = tcfg["memory_limit_mb"] or tcfg["memory_fraction"] * free_mb(device)
    longest, total = max(c.frames for c in clips), sum(c.frames for c in clips)
    measure(model, clips, longest, cfg, accelerator, optimizer_cls)  # a first update allocates once-only caches
    tried, good, bad = {}, None, None
    budget = longest
    while budget <= total and bad is None:  # double until the cap or the whole dataset is reached
        tried[budget] = measure(model, clips, budget, cfg, accelerator, optimizer_cls)
        fits = tried[budget] is not None and tried[budget] <= limit
        good, bad = (budget, bad) if fits else (good, budget)
        budget *= 2
    if bad is None and good != total:  # the whole dataset in one batch fits
        tried[total] = measure(model, clips, total, cfg, accelerator, optimizer_cls)
        good, bad = (total, None) if tried[total] is not None and tried[total] <= limit else (good, total)
    for _ in range(3):  # then narrow the step that crossed the cap
        if good is None or bad is None or bad - good < longest // 4:
            break
        mid = (good + bad) // 2
        tried[mid] = measure(model, clips, mid, cfg, accelerator, optimizer_cls)
        good, bad = (mid, bad) if tried[mid] is not None and tried[mid] <= limit else (good, mid)
    # the smallest any rank affords; gathered before any refusal, so that no rank waits for one that stopped
    chosen = int(min(accelerator.gather(torch.tensor([good or 0], device=device))))
    if not chosen:
        peak = tried[longest]
        needs = ("more than the memory there is" if peak is None else f"{peak:.0f} MB") if good is None else \
            "more than another process's cap"
        raise UserError(f"data.frames_per_batch=auto: even one longest clip ({longest} frames) needs {needs} against "
                        f"a cap of {limit:.0f} MB; try {OOM_ADVICE.split(', ', 1)[1]}, or prepare shorter clips", code="memory")
    peak = tried.get(chosen) or tried[good]  # else this rank's figure at its own larger choice: an upper bound
    record = {"frames_per_batch": chosen, "peak_mb": round(peak, 1), "limit_mb": round(limit, 1),
              "in_use_mb": round(in_use_mb(device), 1),
              "tried": {int(b): (None if p is None else round(p, 1)) for b, p in sorted(tried.items())}}
    if accelerator.is_main_process:
        print(f"data.frames_per_batch=auto: {chosen} frames (an update adds {peak:.0f} MB; cap "
              f"{limit:.0f} MB on {device.type})", file=sys.stderr)
    return record
