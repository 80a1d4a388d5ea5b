"""Inference cold start: process start to wav written, `python -m infer run=...` against upstream's path.

Both sides load the same random weights of the same model (a hub-layout checkpoint, and the run
this tool adopts from it), the same local full-size vocos folder (random weights), the same
reference clip and text, 8 sampling steps, CPU. Upstream's side is bench/upstream_infer.py: its
own imports, load_vocoder, load_model and infer_batch_process; only its FFmpeg-bound reference
loading (pydub, torchaudio.load) is replaced by soundfile. Usage: python bench/infer_cold_start.py [repeat]
"""
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import machine, make_run, wall  # noqa: E402
from bench.makers import write_vocos  # noqa: E402

GEN_TEXT = "The quick brown fox jumps over the lazy dog."
MODELS = ("f5tts_tiny", "f5tts_small")


def main(repeat: int = 3, models=MODELS, warm: bool = True) -> None:
    import json

    from finetune.media.audio import demo_rows
    from finetune.lock.vocab import default_vocab_path

    ref, ref_text = demo_rows()[0]
    print(f"machine: {machine()}; 8 NFE steps, vocos-24khz-sized vocoder, CPU")
    print(f"{'model':<12} {'side':<9} {'seconds median (range)':<24}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vocos = write_vocos(tmp / "vocos")
        for model in models:
            run, ckpt, arch = make_run(tmp / "runs", model)
            ours = [sys.executable, "-m", "infer", f"run={run}", f"ref_audio={ref}", f"ref_text={ref_text}",
                    f"gen_text={GEN_TEXT}", f"out={tmp / 'ours.wav'}", "nfe_step=8", "vocoder=vocos",
                    f"vocoder_path={vocos}", "device=cpu"]
            theirs = [sys.executable, "bench/upstream_infer.py", str(ckpt), str(default_vocab_path()), str(vocos),
                      str(ref), ref_text, GEN_TEXT, str(tmp / "up.wav"), "8", json.dumps(arch)]
            if warm:  # the page cache warmed for both, as a second start would find it (the test's smoke run skips it)
                wall(ours), wall(theirs)
            times = {"ours": [], "upstream": []}
            for _ in range(repeat):
                times["upstream"].append(wall(theirs))
                times["ours"].append(wall(ours))
            for side, t in times.items():
                print(f"{model:<12} {side:<9} {statistics.median(t):7.2f} ({min(t):.2f}-{max(t):.2f})")
            ratios.append(statistics.median(a / b for a, b in zip(times["ours"], times["upstream"])))
            print(f"{model:<12} ours/upstream (pairwise median): {ratios[-1]:.2f}x")
    print(f"inference cold start, ours/upstream, worst of the models: {max(ratios):.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
