"""Load memory: peak resident memory added by loading a Small-size checkpoint for inference.

Each side runs in a fresh process that first imports everything it needs, then records its
resident set (VmRSS), loads the model, and reports the peak (VmHWM) minus that baseline. Ours:
infer.synth.load_run on a run adopted from the checkpoint; upstream: f5_tts.infer.utils_infer.load_model
on the checkpoint itself (hub layout). Both hold one fp32 set of f5tts_small weights.
Usage: python bench/load_memory.py [repeat]
"""
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import machine, make_run  # noqa: E402

PROBE = r'''
import json, sys
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
side, target, arch, vocab = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
if side == "ours":
    from finetune.lock.builder import without_upstream_trainer
    without_upstream_trainer()
    from finetune.lock.load import load_run
    import f5_tts.model.backbones.dit, f5_tts.model.cfm
    load = lambda: load_run(target, device="cpu")
else:
    from f5_tts.infer.utils_infer import load_model
    from f5_tts.model import DiT
    load = lambda: load_model(DiT, arch, target, mel_spec_type="vocos", vocab_file=vocab, device="cpu")
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
model = load()
print(json.dumps({"added": status("VmHWM") - before, "after": status("VmRSS") - before}))
'''


def probe(side: str, target: Path, arch: dict, vocab: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, side, str(target), json.dumps(arch), vocab], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{side} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(repeat: int = 3, model: str = "f5tts_small") -> None:
    from finetune.lock.checkpoints import list_checkpoints
    from finetune.lock.vocab import default_vocab_path

    with tempfile.TemporaryDirectory() as tmp:
        run, ckpt, arch = make_run(Path(tmp), model)
        ours_file = list_checkpoints(run)[0]
        sizes = {"ours": ours_file.stat().st_size, "upstream": ckpt.stat().st_size}
        peaks = {"ours": [], "upstream": []}
        for _ in range(repeat):
            for side, target in (("upstream", ckpt), ("ours", run)):
                peaks[side].append(probe(side, target, arch, str(default_vocab_path()))["added"])
    print(f"machine: {machine()}; {model}, fp32, CPU")
    print(f"{'side':<10} {'checkpoint MB':>14} {'peak added MB (median, range)':>32} {'x checkpoint':>13}")
    for side in ("upstream", "ours"):
        p = peaks[side]
        print(f"{side:<10} {sizes[side] / 1e6:14.1f} {statistics.median(p) / 1e6:16.1f} "
              f"({min(p) / 1e6:.1f}-{max(p) / 1e6:.1f}) {statistics.median(p) / sizes[side]:13.2f}")
    ratio = statistics.median(peaks["ours"]) / statistics.median(peaks["upstream"])
    print(f"load memory: ours {statistics.median(peaks['ours']) / sizes['ours']:.2f}x its checkpoint, "
          f"ours/upstream {ratio:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
