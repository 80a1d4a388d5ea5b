"""Data preparation: this tool against upstream's prepare_csv_wavs, then training from the mel cache vs mel on the fly.

Part 1 writes N synthetic speech-like clips (1-6 s, 24 kHz) with a metadata file in upstream's
format, then runs both command lines from process start to finish into fresh folders, alternating,
each with its default worker count. Upstream reads each file's duration and converts the text;
this tool also decodes every clip, checks it and computes its mel spectrogram: first without its
per-clip extras (like for like), then with loudness normalisation, then with its defaults (loudness
and a quality score per clip).

Part 2 trains f5tts_tiny for a few updates on the prepared clips twice: mel read from the cache,
and mel computed from the audio for every batch (what upstream's dataset does). A tiny model shows
the data path's cost; on a Small model (16 s per update here) the two differed by 4%.

Usage: python bench/prepare_speed.py [clips] [repeat]
"""
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import machine, wall  # noqa: E402
from bench.makers import write_clips, write_metadata  # noqa: E402


# this tool's preparation with each of its per-clip steps: loudness (default -20 LUFS), quality scores (default on)
VARIANTS = {"plain": ["loudness.target_lufs=null", "quality.model=null"], "loudness": ["quality.model=null"],
            "default": []}


def prepare_speed(tmp: Path, clips: int, repeat: int) -> tuple[Path, float]:
    meta = write_metadata(tmp / "metadata.csv", write_clips(tmp / "src", clips, seed=1))
    ours, theirs = {k: [] for k in VARIANTS}, []
    for i in range(repeat):
        theirs.append(wall([sys.executable, "-m", "f5_tts.train.datasets.prepare_csv_wavs", str(meta),
                            str(tmp / f"up{i}"), "--pretrain"]))
        for kind, extra in VARIANTS.items():
            ours[kind].append(wall([sys.executable, "-m", "finetune.prepare", f"input={meta}",
                                    f"out={tmp / f'ds-{kind}{i}'}", *extra]))
    again = wall([sys.executable, "-m", "finetune.prepare", f"input={meta}", f"out={tmp / 'ds-default0'}"])
    print(f"{'preparation of ' + str(clips) + ' clips':<44} {'clips/s median (range)':<26}")
    for label, t in (("upstream prepare_csv_wavs (duration + text)", theirs),
                     ("this tool (decode, checks, mel cache)", ours["plain"]),
                     ("  + loudness to -20 LUFS", ours["loudness"]),
                     ("  + quality scores (defaults)", ours["default"])):
        rates = [clips / s for s in t]
        print(f"{label:<44} {statistics.median(rates):8.1f} ({min(rates):.1f}-{max(rates):.1f})")
    print(f"{'this tool, re-run on the same input':<44} {clips / again:8.1f}")
    cost = statistics.median(b / a for a, b in zip(ours["plain"], ours["loudness"]))
    print(f"{'loudness normalisation, time x (pairwise)':<44} {cost:8.2f}x")
    ratio = statistics.median(a / b for a, b in zip(theirs, ours["plain"]))
    print(f"{'ours/upstream, like for like (pairwise)':<44} {ratio:8.2f}x")
    return tmp / "ds-default0", ratio


def per_clip_cost(tmp: Path, repeat: int) -> None:
    """CPU time of one clip's preparation (decode, checks, mel) in this process, with loudness normalisation off
    and on, and of its quality score: per-clip costs, less sensitive than wall time to a busy machine."""
    from finetune.media.audio import decode
    from finetune.media.quality import score
    from finetune.prepare import process
    from bench.makers import spec_of

    mel, audio = spec_of("f5tts")["mel"], sorted((tmp / "src" / "wavs").glob("*.wav"))[:60]
    bounds = {"min_seconds": 0.3, "max_seconds": 30.0, "silence_db": -60.0, "loud_db": 6.0}
    seconds = sum(decode(p.read_bytes())[0].size for p in audio) / 24000
    times = {"off": [], "on": []}
    import pyloudnorm  # noqa: F401  (its import, once per preparation, is not a clip's cost)
    for i in range(repeat):
        for kind, target in (("off", None), ("on", -20.0)):
            out = tmp / f"cost-{kind}{i}"
            (out / "mel").mkdir(parents=True)
            started = time.process_time()
            for p in audio:
                process(str(p), str(out), mel, bounds, {"target_lufs": target, "peak_db": -1.0})
            times[kind].append((time.process_time() - started) / len(audio))
    score([decode(audio[0].read_bytes())[0]], 24000)  # the model's load is not the rate
    started = time.process_time()
    for p in audio[:20]:
        score([decode(p.read_bytes())[0]], 24000)
    rated = (time.process_time() - started) / 20
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"{'CPU per clip (' + f'{seconds / len(audio):.1f} s mean), ms':<44} {'median':<26}")
    print(f"{'decode, checks, mel':<44} {off * 1000:8.1f}")
    print(f"{'  + loudness to -20 LUFS':<44} {on * 1000:8.1f}   (+{(on - off) * 1000:.1f} ms, {on / off:.2f}x)")
    print(f"{'quality score (distillmos, 1 thread)':<44} {rated * 1000:8.1f}")


def train_speed(dataset: Path, updates: int, repeat: int) -> None:
    import torch

    from finetune.media.audio import load_audio, mel_spectrogram
    from finetune.lock.builder import build_model
    from finetune.media.dataset import Clip, load_clips
    from finetune.train import Trainer, make_accelerator
    from bench.makers import VOCAB, loop_config, spec_of

    class OnTheFly(Clip):  # upstream's way: decode, resample and STFT the audio for every batch
        def with_mel(self):
            return replace(self, mel=mel_spectrogram(load_audio(self.audio, self.sr), self.spec))

    cfg = loop_config({"max_updates": updates, "save_every": 10**6, "log_every": 10**6}, {"lr": 1e-4},
                      {"frames_per_batch": 3000, "max_samples": 64})
    print(f"{'training from prepared data':<44} {'updates/s median (range)':<26}")
    for model in ("f5tts_tiny",):
        spec = spec_of(model)
        cached, _ = load_clips({"kind": "prepared", "path": str(dataset)}, spec)
        fly = [OnTheFly(**{k: getattr(c, k) for k in c.__dataclass_fields__}) for c in cached]
        for c in fly:
            c.sr, c.spec = spec["mel"]["target_sample_rate"], spec["mel"]
        rates = {"cache": [], "fly": []}
        n = updates
        for _ in range(repeat):
            for kind, clips in (("fly", fly), ("cache", cached)):
                torch.manual_seed(0)
                m = build_model(spec, VOCAB)
                with tempfile.TemporaryDirectory() as run:
                    started = time.perf_counter()
                    Trainer(cfg, make_accelerator(cfg), m, clips, Path(run), {"sha256": "0" * 64}).fit()
                    rates[kind].append(n / (time.perf_counter() - started))
        for kind, label in (("fly", "mel on the fly"), ("cache", "mel from the cache")):
            r = rates[kind]
            print(f"{model + ', ' + label:<44} {statistics.median(r):8.2f} ({min(r):.2f}-{max(r):.2f})")
        ratio = statistics.median(a / b for a, b in zip(rates["cache"], rates["fly"]))
        print(f"{model + ', cache/on the fly (pairwise median)':<44} {ratio:8.2f}x")


def main(clips: int = 300, repeat: int = 3, updates: int = 40) -> None:
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        dataset, ratio = prepare_speed(Path(tmp), clips, repeat)
        per_clip_cost(Path(tmp), repeat)
        train_speed(dataset, updates, repeat)
    print(f"data preparation, clips per second, ours/upstream: {ratio:.2f}x")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
