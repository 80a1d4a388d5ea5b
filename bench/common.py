"""Timing helpers for the benchmarks: repeat, report median and spread, compare pairs."""
import platform
import statistics
import subprocess
import time


def timed(fn, repeat: int = 5) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def row(label: str, seconds: list[float]) -> str:
    med = statistics.median(seconds)
    return f"{label:<44} median {med * 1000:10.2f} ms   spread {min(seconds) * 1000:.2f}-{max(seconds) * 1000:.2f} ms"


def wall(cmd: list[str]) -> float:
    """Seconds a command takes from process start to exit, run from the repository root."""
    from pathlib import Path

    started = time.perf_counter()
    r = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - started


def machine() -> str:
    import os

    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def drop_page_cache() -> bool:
    """Empty the OS page cache (root only) so a load reads from disk, as a first load does."""
    import os

    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def timed_cold(fn, repeat: int = 3) -> list[float] | None:
    out = []
    for _ in range(repeat):
        if not drop_page_cache():
            return None
        out += timed(fn, 1)
    return out


# ---- fixtures shared by the inference benchmarks ------------------------------------------------

def make_run(root, model: str):
    """A random-weight checkpoint of `model` in the hub layout (ema_model.*), and a run adopted from it (in this
    process: the adoption is set-up, not what is measured).

    Returns (run folder, checkpoint file, upstream model_cfg): both sides then load the same weights.
    """
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from finetune.adopt import adopt
    from finetune.lock.builder import build_model
    from bench.makers import VOCAB, spec_of

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    spec = spec_of(model)
    torch.manual_seed(0)
    sd = build_model(spec, VOCAB).state_dict()
    ckpt = root / f"{model}.safetensors"
    save_file({f"ema_model.{k}": v.contiguous() for k, v in sd.items()}, str(ckpt))
    adopt([f"ckpt={ckpt}", f"model={model}", f"run.root={root}", f"run.name={model}"])
    arch = {k: v for k, v in spec["arch"].items() if v is not None}
    return root / model, ckpt, arch
