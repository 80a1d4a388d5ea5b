"""Full-size training step on a GPU: this tool's loop against upstream's Trainer, bf16, synthetic mel.

For F5TTS_v1_Base and E2TTS_Base (random init): batches of 48 clips x 800 frames (38,400 frames,
upstream's per-GPU pre-training budget) of random mel and random text. Each side runs in a fresh
process, twice (N1 and N2 updates); the step time is the difference over N2 - N1 updates, which
cancels start-up and the final checkpoint save that both sides make (one count, `--updates N`, runs one
process per side and counts its start-up in: the test suite's CPU check). Reports step time, mel
frames/s, peak GPU memory and the share of the GPU's peak dense bf16 throughput (model FLOPs:
6 x parameters x frames for the matmuls, plus attention). It runs on the GPU when there is one;
anywhere else `--model f5tts_tiny --mixed no` checks it on the CPU.
Usage: python bench/gpu_step.py [--model f5tts,e2tts] [--updates 3,13 | N] [--mixed bf16] [--repeat 3]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIPS_PER_BATCH, FRAMES = 48, 800
EMA = dict(beta=0.9999, update_after_step=0, update_every=10)  # one EMA update per 10 updates, as upstream
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, no sparsity


def batches(updates: int, spec: dict, vocab: list[str]):
    import torch

    g = torch.Generator().manual_seed(0)
    n_mel = spec["mel"]["n_mel_channels"]
    for _ in range(updates * CLIPS_PER_BATCH):
        text = [vocab[int(i)] for i in torch.randint(1, len(vocab), (FRAMES // 6,), generator=g)]
        yield torch.randn(n_mel, FRAMES, generator=g), text


def side_run(side: str, model_name: str, updates: int, mixed: str) -> dict:
    """One process: train `updates` updates and report seconds and peak memory."""
    import torch

    from finetune.lock.builder import build_model
    from finetune.media.dataset import Clip
    from bench.makers import VOCAB, loop_config, spec_of

    spec = spec_of(model_name)
    torch.manual_seed(0)
    model = build_model(spec, VOCAB)
    data = list(batches(updates, spec, VOCAB))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if side == "upstream":
            from f5_tts.model import Trainer

            class Synthetic(torch.utils.data.Dataset):
                def __len__(self):
                    return len(data)

                def __getitem__(self, i):
                    return {"mel_spec": data[i][0], "text": data[i][1]}

                def get_frame_len(self, i):
                    return FRAMES

            trainer = Trainer(model, epochs=1, learning_rate=1e-4, num_warmup_updates=10, save_per_updates=10**6,
                              checkpoint_path=tmp, batch_size_per_gpu=CLIPS_PER_BATCH * FRAMES,
                              batch_size_type="frame", max_samples=CLIPS_PER_BATCH, logger=None, ema_kwargs=EMA,
                              accelerate_kwargs={"mixed_precision": mixed})
            trainer.train(Synthetic(), num_workers=2, resumable_with_seed=666)
        else:
            from finetune.train import Trainer, make_accelerator

            cfg = loop_config({"max_updates": updates, "save_every": 10**6, "log_every": 10**6,
                               "mixed_precision": mixed, "num_workers": 2, "ema": EMA},
                              {"lr": 1e-4, "warmup_updates": 10},
                              {"frames_per_batch": CLIPS_PER_BATCH * FRAMES, "max_samples": CLIPS_PER_BATCH})
            clips = [Clip(f"synthetic:{i}", Path("-"), "", text, FRAMES, mel) for i, (mel, text) in enumerate(data)]
            Trainer(cfg, make_accelerator(cfg), model, clips, Path(tmp), {"sha256": "0" * 64}).fit()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    params = sum(p.numel() for p in model.transformer.parameters())
    arch = spec["arch"]
    return {"seconds": seconds, "peak": peak, "params": params, "depth": arch["depth"], "dim": arch["dim"]}


def step_flops(r: dict) -> float:
    """Model FLOPs of one update: 6 x params x frames (matmuls, forward + backward) + attention's QK and AV."""
    frames = CLIPS_PER_BATCH * FRAMES
    return 6 * r["params"] * frames + 3 * 4 * r["depth"] * r["dim"] * CLIPS_PER_BATCH * FRAMES ** 2


def peak_throughput() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def run(side: str, model: str, updates: int, mixed: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--side", side, "--model", model, "--updates", str(updates),
                        "--mixed", mixed, "--clips", str(CLIPS_PER_BATCH)], cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{side} {model} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    global CLIPS_PER_BATCH
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="f5tts,e2tts")
    ap.add_argument("--updates", default="3,13")
    ap.add_argument("--mixed", default="bf16")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--clips", type=int, default=CLIPS_PER_BATCH, help="clips per batch (the CPU check: fewer)")
    ap.add_argument("--side")
    args = ap.parse_args(argv)
    CLIPS_PER_BATCH = args.clips
    if args.side:
        print(json.dumps(side_run(args.side, args.model, int(args.updates), args.mixed)))
        return
    import torch

    from bench.common import machine

    counts = [int(u) for u in args.updates.split(",")]
    n1, n2 = (0, counts[0]) if len(counts) == 1 else counts
    peak_tp = peak_throughput()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"machine: {machine()}; {device}; {args.mixed}; {CLIPS_PER_BATCH} x {FRAMES} frames per update")
    print(f"{'model':<8} {'side':<9} {'s/update (median, range)':<26} {'frames/s':>10} {'peak GB':>8} "
          f"{'bf16 peak %':>11}")
    ratios = []
    for model in args.model.split(","):
        steps, last = {"upstream": [], "ours": []}, {}
        for _ in range(args.repeat):  # the sides alternate, so machine noise hits both
            for side in steps:
                short = run(side, model, n1, args.mixed) if n1 else {"seconds": 0.0}
                last[side] = run(side, model, n2, args.mixed)
                steps[side].append((last[side]["seconds"] - short["seconds"]) / (n2 - n1))
        for side, times in steps.items():
            step = statistics.median(times)
            share = f"{step_flops(last[side]) / step / peak_tp:11.1%}" if peak_tp else f"{'-':>11}"
            spread = f"{step:.3f} ({min(times):.3f}-{max(times):.3f})"
            print(f"{model:<8} {side:<9} {spread:<26} {CLIPS_PER_BATCH * FRAMES / step:10.0f} "
                  f"{last[side]['peak'] / 1e9:8.2f} {share}")
        pairs = [u / o for u, o in zip(steps["upstream"], steps["ours"])]
        ratios.append(statistics.median(pairs))
        print(f"{model:<8} speed ours/upstream, pair by pair: median {ratios[-1]:.2f}x "
              f"(range {min(pairs):.2f}-{max(pairs):.2f})")
    print(f"full-size training step, speed ours/upstream, median over models: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
