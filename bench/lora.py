"""LoRA against a full fine-tune of the same model, data and batch: checkpoint size, peak training memory and
updates/s, side by side.

Each side is a real `python -m finetune` run in a fresh process (its peak memory is its own), on the demo clips
(both in one batch of 2000 frames, fp32), from the same random-weight base file in the hub's layout.
- checkpoint: the weights file of the last update (EMA and online sets), and the training state beside it;
- peak training memory: the largest `memory_mb` in metrics.jsonl, as finetune/memory.py measures it (peak
  resident size of the process on CPU, peak allocated on CUDA), logged every update;
- updates/s: from metrics.jsonl's `seconds` (training time alone), the first update (warm-up) left out.
The base model's checkpoint ratio, too large to train on a CPU here, is computed from its tensor shapes.

On a CPU the resident size is also the C allocator's: glibc raises its mmap threshold as large blocks are
freed, after which tensors of a few MB come from its heap, whose freed holes stay resident. `--malloc
default,mmap` runs each side a second time with the threshold fixed (MALLOC_MMAP_THRESHOLD_=131072, glibc's
starting value): every tensor over 128 kB is then its own mapping, returned when freed, so the peak is the
memory tensors actually use.
Usage: python bench/lora.py [model ...] [--updates N] [--rank R] [--malloc default[,mmap]] [--repeat N]
       (default: f5tts_tiny f5tts_small, 10 updates, rank 16, default allocator, one run a side)
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import machine  # noqa: E402

SIZES = ("f5tts_tiny", "f5tts_small")


def write_base(path: Path, model: str) -> Path:
    """Random weights of `model` in the hub's layout, the tensors upstream initialises to zero (gates, output
    projection) drawn too, so that gradients reach every block as they do from a trained base."""
    import torch
    from safetensors.torch import save_file

    from finetune.lock.builder import build_model
    from bench.makers import VOCAB, ema_prefixed, spec_of

    torch.manual_seed(0)
    state = {k: v if v.any() else 0.02 * torch.randn_like(v) for k, v in build_model(spec_of(model), VOCAB).state_dict().items()}
    save_file({k: v.contiguous() for k, v in ema_prefixed(state).items()}, str(path))
    return path


MALLOC = {"default": {}, "mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


def train(root: Path, model: str, base: Path, side: str, updates: int, rank: int, malloc: str) -> dict:
    adapter = ["adapter=lora", f"adapter.rank={rank}", f"adapter.alpha={2 * rank}"] if side == "lora" else []
    args = [sys.executable, "-m", "finetune", f"model={model}", "experiment=demo", f"pretrained={base}", *adapter,
            f"train.max_updates={updates}", f"train.save_every={updates}", "train.log_every=1",
            f"run.root={root}", f"run.name={model}-{side}-{malloc}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **MALLOC[malloc]}
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{model} {side} failed:\n{r.stderr[-2000:]}")
    run = root / f"{model}-{side}-{malloc}"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:]  # the first update allocates once-only caches and the optimizer state
    rate = (timed[-1]["update"] - rows[0]["update"]) / (timed[-1]["seconds"] - rows[0]["seconds"])
    return {"weights_mb": (run / "checkpoints" / f"model_{updates:08d}.safetensors").stat().st_size / 2**20,
            "state_mb": (run / "checkpoints" / f"state_{updates:08d}.pt").stat().st_size / 2**20,
            "peak_mb": max(r["memory_mb"] for r in rows), "updates_s": rate}


def shape_ratio(model: str, rank: int) -> tuple[float, float]:
    """(adapter MB, whole model MB) of one weight set of `model`, from shapes alone (meta tensors)."""
    import torch

    from finetune.lock.adapter import adapter_spec, trained_state, with_adapter
    from finetune.lock.builder import build_model
    from finetune.lock.schema import LORA_TARGETS
    from bench.makers import VOCAB, spec_of

    with torch.device("meta"):
        base = build_model(spec_of(model), VOCAB, init_weights=False)
        whole = sum(v.numel() * v.element_size() for v in base.state_dict().values())
        spec = adapter_spec({"kind": "lora", "rank": rank, "alpha": 2 * rank, "targets": LORA_TARGETS}, [])
        adapter = sum(v.numel() * v.element_size() for v in trained_state(with_adapter(base, spec)).values())
    return adapter / 2**20, whole / 2**20


def median_run(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(models=SIZES, updates: int = 10, rank: int = 16, malloc=("default",), repeat: int = 1) -> None:
    print(f"machine: {machine()}; demo clips (1134 frames) in one batch, fp32, CPU; LoRA rank {rank}, alpha {2 * rank}, "
          f"targets attention + feed-forward; {updates} updates; median of {repeat} runs a side, the sides alternating")
    print(f"{'model':<12} {'allocator':<9} {'side':<5} {'checkpoint MB':>13} {'state MB':>9} {'peak MB':>9} {'updates/s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            base = write_base(Path(tmp) / f"{model}.safetensors", model)
            for how in malloc:
                runs = {"full": [], "lora": []}
                for _ in range(repeat):
                    for side in runs:
                        runs[side].append(train(Path(tmp), model, base, side, updates, rank, how))
                        shutil.rmtree(Path(tmp) / f"{model}-{side}-{how}")
                got = {side: median_run(r) for side, r in runs.items()}
                for side, m in got.items():
                    print(f"{model:<12} {how:<9} {side:<5} {m['weights_mb']:13.2f} {m['state_mb']:9.2f} "
                          f"{m['peak_mb']:9.0f} {m['updates_s']:9.2f}")
                full, lora = got["full"], got["lora"]
                print(f"{model:<12} {how:<9} lora/full: checkpoint {lora['weights_mb'] / full['weights_mb']:.1%} (target "
                      f"< 5%), peak memory {lora['peak_mb'] / full['peak_mb']:.1%} (target < 70%), updates/s "
                      f"{lora['updates_s'] / full['updates_s']:.2f}x")
    adapter, whole = shape_ratio("f5tts", rank)
    print(f"f5tts (Base), from shapes: adapter {adapter:.1f} MB vs model {whole:.1f} MB per weight set: {adapter / whole:.2%}")


if __name__ == "__main__":
    args = sys.argv[1:]
    options = {"--updates": "10", "--rank": "16", "--malloc": "default", "--repeat": "1"}
    for name in options:
        if name in args:
            i = args.index(name)
            options[name] = args[i + 1]
            del args[i:i + 2]
    main(tuple(args) or SIZES, int(options["--updates"]), int(options["--rank"]), tuple(options["--malloc"].split(",")),
         int(options["--repeat"]))
