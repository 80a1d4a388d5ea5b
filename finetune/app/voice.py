"""What the Synthesize and A/B forms do besides python -m infer: a seed of -1 drawn at random (and shown), a
reference clip without text transcribed by a recogniser, a random reference clip from a run's dataset, and
long silences removed from a synthesised wav (written beside it, its settings recorded with the removal)."""
import secrets
import threading
from functools import lru_cache
from pathlib import Path

from finetune.lock.errors import UserError
from finetune.lock.schema import SEED_END

SILENCE_DB = -50.0  # upstream's remove_silence_for_generated_wav: pauses quieter than this, longer than
LONGEST_PAUSE = 1.0  # this many seconds, are cut
KEPT_PAUSE = 0.5  # to this many
FRAME = 0.01
_ASR = threading.Lock()


def seed(value) -> int:
    """The seed a form asks for; -1 (or empty) draws one, which the page shows as used."""
    try:
        n = int(value) if str(value).strip() not in ("", "None") else -1
    except (TypeError, ValueError):
        raise UserError(f"seed={value}: a whole number from 0 to {SEED_END - 1}, or -1 for a random one", code="range")
    if n == -1:
        return secrets.randbelow(SEED_END)
    if not 0 <= n < SEED_END:
        raise UserError(f"seed={n}: a whole number from 0 to {SEED_END - 1}, or -1 for a random one", code="range")
    return n


@lru_cache(maxsize=2)
def _recogniser(model: str):
    from finetune.media import asr
    from finetune.transcribe import pick_device

    folder, _ = asr.model_folder(model, "asr.model")
    pipe = asr.recogniser(folder, model, pick_device("auto"))
    return pipe, asr.generate_kwargs(pipe, None, model)


def transcribe(path, model: str) -> str:
    """What a reference clip says, as the recogniser hears it (as preparation transcribes clips)."""
    import torch

    from finetune.media.asr import SAMPLE_RATE
    from finetune.media.audio import decode, resample
    from finetune.transcribe import clean

    samples, sr = decode(Path(path).read_bytes())
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    with _ASR:
        pipe, generate = _recogniser(model)
        heard = pipe([{"raw": resample(torch.from_numpy(samples), sr, SAMPLE_RATE).numpy(),
                       "sampling_rate": SAMPLE_RATE}], generate_kwargs=generate, return_timestamps=False)
    text = clean(heard[0]["text"])
    if not text:
        raise UserError(f"asr.model={model} heard nothing in the reference clip; type what it says", code="app")
    return text


def random_clip(run_dir: Path, manifest: dict) -> tuple[Path, str]:
    """A clip of the run's dataset (audio, text), drawn at random: a reference in the voice it trained on."""
    from finetune.media.audio import demo_rows
    from finetune.media.dataset import read_dataset

    data = manifest["config"]["data"]
    if data["kind"] == "demo":
        rows = demo_rows()
    else:
        rows = [(Path(c["audio"]), c["text"]) for c in read_dataset(data["path"])["clips"]]
    rows = [(a, t) for a, t in rows if Path(a).is_file()]
    if not rows:
        raise UserError(f"run {run_dir.name!r}: none of its dataset's clips is on this machine any more", code="app")
    return rows[secrets.randbelow(len(rows))]


def remove_silence(wav_path: Path) -> Path:
    """`<name>-nosilence.wav` beside the wav: every pause longer than LONGEST_PAUSE cut to KEPT_PAUSE."""
    import numpy as np
    import soundfile as sf
    import torch

    from finetune.media.audio import wav_settings, write_wav

    wav, sr = sf.read(str(wav_path), dtype="float32")
    frame = int(sr * FRAME)
    frames = len(wav) // frame
    rms = np.sqrt(np.mean(wav[:frames * frame].reshape(frames, frame) ** 2, axis=1) + 1e-12)
    quiet = 20 * np.log10(rms) < SILENCE_DB
    keep = np.ones(len(wav), dtype=bool)
    i = 0
    while i < frames:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < frames and quiet[j]:
            j += 1
        if (j - i) * FRAME > LONGEST_PAUSE:
            half = int(KEPT_PAUSE / 2 / FRAME)
            keep[(i + half) * frame:(j - half) * frame] = False
        i = j
    out = wav_path.with_name(wav_path.stem + "-nosilence.wav")
    settings = wav_settings(wav_path)
    if settings is not None:
        settings = settings | {"remove_silence": {"silence_db": SILENCE_DB, "longer_than": LONGEST_PAUSE,
                                                  "kept": KEPT_PAUSE, "from": wav_path.name}}
    write_wav(out, torch.from_numpy(wav[keep]), sr, settings)
    return out
