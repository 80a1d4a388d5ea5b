"""Recordings to a dataset: slicing speed, then the whole raw-to-dataset path with a tiny recogniser.

Part 1 writes speech-like recordings (phrases of 1-8 s between pauses of 0.2-1.2 s; a 24 kHz mono
wav, a 44.1 kHz stereo flac and a 16 kHz ogg, `minutes` each) and times, in seconds of audio per
second of wall time (x real time, target 100x):
  - find_clips alone: silence detection (librosa.effects.split) and the choice of cuts;
  - slice_recording: read, hash, decode, detect, write every clip and the record (one process);
  - the same again on unchanged input, where the record is found and nothing is cut.
Upstream's slicer lives inside its Gradio app module, which does not import without the app's data
folder, so there is no upstream line here.

The same with slice.detector=vad (silero-vad finding speech instead of a loudness threshold), and the
speech-quality predictor (distillmos) on the cut clips, in one process.

Part 2 runs python -m finetune.prepare input=<recordings> transcribe=true on those recordings with a
random-weight Whisper of 16 d_model (bench/makers.py: it writes 16 characters per clip), from
process start to exit: a first run (slice, transcribe, mel) and a re-run (everything reused). The
recogniser's own cost is what the tiny model hides; on a GPU, Whisper-turbo's real-time factor is
the figure that matters and is not measured here.

Usage: python bench/slice_speed.py [minutes] [repeat]
"""
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import machine, wall  # noqa: E402

SLICE = {"min_seconds": 3.0, "max_seconds": 15.0, "silence_db": -40.0, "min_silence": 0.3, "pad": 0.1}


def talk(minutes: float, sr: int, seed: int):
    import numpy as np

    from bench.makers import speechlike

    rng = np.random.default_rng(seed)
    parts, total = [], 0.0
    while total < minutes * 60:
        phrase, pause = rng.uniform(1, 8), rng.uniform(0.2, 1.2)
        parts += [speechlike(phrase, sr, int(rng.integers(1 << 30))), np.zeros(int(pause * sr), np.float32)]
        total += phrase + pause
    return np.concatenate(parts)


def write_recordings(folder: Path, minutes: float) -> list[tuple[Path, float]]:
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, sr, stereo, fmt in (("mono_24k.wav", 24000, False, "WAV"), ("stereo_44k.flac", 44100, True, "FLAC"),
                                  ("mono_16k.ogg", 16000, False, "OGG")):
        y = talk(minutes, sr, seed=len(out))
        with sf.SoundFile(folder / name, "w", sr, 2 if stereo else 1, format=fmt) as f:
            for i in range(0, y.size, sr * 10):  # in blocks: libsndfile's vorbis encoder crashes on long writes
                f.write(np.stack([y[i:i + sr * 10], 0.9 * y[i:i + sr * 10]], 1) if stereo else y[i:i + sr * 10])
        out.append((folder / name, y.size / sr))
    return out


def rate(seconds_of_audio: float, times: list[float]) -> str:
    rates = [seconds_of_audio / t for t in times]
    return f"{statistics.median(rates):10.0f}x ({min(rates):.0f}-{max(rates):.0f})"


def slicing_speed(tmp: Path, minutes: float, repeat: int) -> float:
    from finetune.media.audio import decode
    from finetune.slicing import find_clips, slice_recording

    recs = write_recordings(tmp / "recs", minutes)
    audio = sum(s for _, s in recs)
    print(f"{'slicing ' + f'{audio / 60:.0f} min of recordings':<44} {'x real time, median (range)':<28} clips")
    decoded = [decode(p.read_bytes()) for p, _ in recs]
    find = []
    for _ in range(repeat):
        started = time.perf_counter()
        clips = sum(len(find_clips(y, sr, SLICE)[0]) for y, sr in decoded)
        find.append(time.perf_counter() - started)
    print(f"{'find_clips (detect silences, choose cuts)':<44} {rate(audio, find):<28} {clips}")
    vad = []
    for _ in range(repeat):
        started = time.perf_counter()
        found = sum(len(find_clips(y, sr, SLICE | {"detector": "vad"})[0]) for y, sr in decoded)
        vad.append(time.perf_counter() - started)
    print(f"{'find_clips, detector=vad (silero-vad)':<44} {rate(audio, vad):<28} {found}")
    cut, again = [], []
    for i in range(repeat):
        folder = tmp / f"clips{i}"
        folder.mkdir()
        for times in (cut, again):  # a fresh folder, then the same one again: the records are found
            started = time.perf_counter()
            for p, _ in recs:
                slice_recording(str(p), str(folder), SLICE, {"loud_db": 6.0})
            times.append(time.perf_counter() - started)
    print(f"{'slice_recording (decode, detect, write)':<44} {rate(audio, cut):<28} {clips}")
    print(f"{'slice_recording again (clips reused)':<44} {rate(audio, again):<28}")
    speed = audio / statistics.median(cut)
    print(f"{'slicing against the 100x target':<44} {speed / 100:10.1f}x")
    return audio


def quality_speed(tmp: Path, repeat: int) -> None:
    """The speech-quality predictor (distillmos) on the clips slicing cut, in this process (one worker's share)."""
    import torch

    from finetune.media.audio import decode
    from finetune.media.quality import score

    clips = sorted((tmp / "clips0").glob("*.wav"))[:40]
    decoded = [decode(p.read_bytes()) for p in clips]
    audio = sum(y.size / sr for y, sr in decoded)
    score([decoded[0][0]], decoded[0][1])  # the model's load is not the rate
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for y, sr in decoded:
            score([y], sr)
        times.append(time.perf_counter() - started)
    print(f"\n{f'quality scores of {len(clips)} clips ({audio:.0f} s)':<44} {rate(audio, times):<28} "
          f"{torch.get_num_threads()} thread(s)")


def raw_to_dataset(tmp: Path, audio: float, repeat: int) -> None:
    from bench.makers import write_tiny_whisper

    whisper = write_tiny_whisper(tmp / "whisper")
    first, again = [], []
    for i in range(repeat):
        cmd = [sys.executable, "-m", "finetune.prepare", f"input={tmp / 'recs'}", "transcribe=true",
               f"asr.model={whisper}", f"out={tmp / f'ds{i}'}"]
        first.append(wall(cmd))
        again.append(wall(cmd))
    import json

    ds = json.loads((tmp / "ds0" / "dataset.json").read_text(encoding="utf-8"))["summary"]
    print(f"\n{'raw to dataset, tiny Whisper, process start to exit':<52} {'seconds, median (range)':<24} x real time")
    for label, t in (("first run (slice, transcribe, mel)", first), ("re-run (all reused)", again)):
        print(f"{label:<52} {statistics.median(t):8.1f} ({min(t):.1f}-{max(t):.1f})        "
              f"{audio / statistics.median(t):6.0f}x")
    print(f"{'clips in the dataset':<52} {ds['clips']:8d} ({ds['hours']:.3f} h)")
    print(f"{'re-run / first run':<52} {statistics.median(a / b for a, b in zip(again, first)):8.2f}")


def main(minutes: float = 10.0, repeat: int = 3) -> None:
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        audio = slicing_speed(Path(tmp), minutes, repeat)
        quality_speed(Path(tmp), repeat)
        raw_to_dataset(Path(tmp), audio, max(1, repeat - 1))


if __name__ == "__main__":
    main(*[t(a) for t, a in zip((float, int), sys.argv[1:3])])
