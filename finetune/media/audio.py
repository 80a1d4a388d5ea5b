"""Audio in and out through soundfile (no FFmpeg needed), and the mel spectrogram training sees."""
import hashlib
import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..lock.errors import UserError, first_line
from .sampling import FORMAT


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate from an encoded file's bytes (stereo is averaged)."""
    samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.ascontiguousarray(samples.mean(axis=1)), sr


def resample(wav: torch.Tensor, sr: int, sample_rate: int) -> torch.Tensor:
    if sr == sample_rate:
        return wav
    import torchaudio.functional as AF  # imported only when needed: it costs a second of start-up

    return AF.resample(wav, sr, sample_rate)


def load_audio(path, sample_rate: int) -> torch.Tensor:
    """Mono float32 waveform [samples] at `sample_rate`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: audio file not found", code="missing")
    try:
        samples, sr = decode(path.read_bytes())
    except Exception as e:  # soundfile raises several types for unreadable input
        raise UserError(f"{path}: cannot read audio ({first_line(e)}); use wav, flac or ogg", code="audio")
    if samples.shape[0] == 0:
        raise UserError(f"{path}: audio has no samples", code="audio")
    return resample(torch.from_numpy(samples), sr, sample_rate)


SOFTWARE = "f5tune"  # the wav's INFO tag: marks files this tool wrote, which it may replace
# The settings of synthesised speech go as JSON into the wav's INFO comment (ICMT), which libsndfile writes.
# libsndfile 1.2.2 reads back a comment of at most 2045 bytes and writes a broken file past about 51 KB, so
# the comment is read here from the RIFF chunks, and kept under a bound far from the writer's limit.
MAX_SETTINGS_BYTES = 16384
TEXTS = ("gen_text", "ref_text")  # what may make a record too long: dropped for their hash, longest first


def settings_json(settings: dict) -> str:
    """The comment a wav's settings are written as: texts too long for it are replaced by their sha256 and length."""
    text = json.dumps(settings, ensure_ascii=False)
    for key in sorted(TEXTS, key=lambda k: -len(settings.get(k) or "")):
        if len(text.encode()) <= MAX_SETTINGS_BYTES or not settings.get(key):
            break
        value = settings[key]
        settings = settings | {key: None, f"{key}_sha256": hashlib.sha256(value.encode()).hexdigest(),
                               f"{key}_chars": len(value)}
        text = json.dumps(settings, ensure_ascii=False)
    return text


def write_wav(path, wav: torch.Tensor, sample_rate: int, settings: dict | None = None) -> None:
    """A 16-bit mono wav tagged as this tool's; synthesised speech passes the settings it was made with
    (finetune/media/sampling.py record()), which wav_settings() reads back."""
    comment = settings_json(settings) if settings is not None else None
    with sf.SoundFile(str(path), "w", sample_rate, 1, format="WAV", subtype="PCM_16") as f:
        f.software = SOFTWARE
        if comment is not None:
            f.comment = comment
        f.write(wav.detach().float().cpu().numpy())
    if comment is not None and _info_comment(path) != comment:  # a libsndfile that drops or cuts it
        raise RuntimeError(f"{path}: libsndfile did not write the settings comment whole")


def _info_comment(path) -> str | None:
    """The ICMT text of a RIFF wav's LIST/INFO chunk, read from the chunks (libsndfile's reader drops long ones)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        while len(chunk := f.read(8)) == 8:
            name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if name != b"LIST" or size > 4 * MAX_SETTINGS_BYTES:
                f.seek(size + size % 2, 1)
                continue
            body = f.read(size + size % 2)
            if body[:4] != b"INFO":
                continue
            at = 4
            while at + 8 <= len(body):
                sub, length = body[at:at + 4], int.from_bytes(body[at + 4:at + 8], "little")
                if sub == b"ICMT":
                    return body[at + 8:at + 8 + length].rstrip(b"\0").decode("utf-8", "replace")
                at += 8 + length + length % 2
    return None


def wav_settings(path) -> dict | None:
    """The settings a synthesised wav records (write_wav's `settings`), or None for a wav without them."""
    try:
        found = json.loads(_info_comment(path) or "null")
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("format") == FORMAT else None


def written_here(path) -> bool:
    """Whether `path` is a wav this tool wrote (its INFO tag says so)."""
    try:
        with sf.SoundFile(str(path)) as f:
            return (f.software or "").startswith(SOFTWARE)
    except (sf.LibsndfileError, RuntimeError, OSError):
        return False


@lru_cache(maxsize=4)
def _vocos_filters(sample_rate: int, n_fft: int, win_length: int, n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hann window and HTK mel filterbank (no norm, 0 Hz to Nyquist): what upstream's vocos mel uses."""
    hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    mel_points = torch.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2)
    hz_points = 700.0 * (10 ** (mel_points / 2595.0) - 1.0)
    slopes = hz_points.unsqueeze(0) - freqs.unsqueeze(1)
    widths = hz_points[1:] - hz_points[:-1]
    rising, falling = -slopes[:, :-2] / widths[:-1], slopes[:, 2:] / widths[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)  # [freqs, n_mels]
    return torch.hann_window(win_length), filters


def mel_filters(mel: dict) -> torch.Tensor:
    """The mel filterbank of the vocos mel, [frequencies, n_mel]: the one the mel and Griffin-Lim's inverse use."""
    return _vocos_filters(mel["target_sample_rate"], mel["n_fft"], mel["win_length"], mel["n_mel_channels"])[1]


def mel_spectrogram(wav: torch.Tensor, mel: dict) -> torch.Tensor:
    """[n_mel, frames], log-magnitude mel as upstream's MelSpec computes it.

    The vocos mel is computed here with torch alone: importing upstream's MelSpec pulls in all of
    f5_tts.model (its trainer, wandb, datasets), seconds of start-up for every preparation worker.
    tests/test_data.py checks both agree; other mel types go to upstream's code.
    """
    if mel["mel_spec_type"] != "vocos":
        from f5_tts.model.modules import MelSpec

        return MelSpec(**mel)(wav.unsqueeze(0))[0]
    window, filters = _vocos_filters(mel["target_sample_rate"], mel["n_fft"], mel["win_length"], mel["n_mel_channels"])
    spec = torch.stft(wav, mel["n_fft"], hop_length=mel["hop_length"], win_length=mel["win_length"], window=window,
                      center=True, pad_mode="reflect", return_complex=True).abs()
    return (spec.T @ filters).T.clamp(min=1e-5).log()  # the product in torchaudio's order


# The labelled clips that the f5-tts package ships in f5_tts/infer/examples/basic/.
DEMO_CLIPS = [
    ("basic_ref_en.wav", "Some call me nature, others call me mother nature."),
    ("basic_ref_zh.wav", "对，这就是我，万人敬仰的太乙真人。"),
]


def demo_rows() -> list[tuple[Path, str]]:
    from importlib.resources import files

    folder = Path(str(files("f5_tts").joinpath("infer/examples/basic")))
    return [(folder / name, text) for name, text in DEMO_CLIPS]
