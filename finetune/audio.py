"""Audio in and out through soundfile (no FFmpeg needed), resampled with torchaudio.functional."""
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .errors import UserError


def load_audio(path, sample_rate: int) -> torch.Tensor:
    """Mono float32 waveform [samples] at `sample_rate`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: audio file not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for unreadable input
        raise UserError(f"{path}: cannot read audio ({str(e).strip().splitlines()[0]}); use wav, flac or ogg")
    if data.shape[0] == 0:
        raise UserError(f"{path}: audio has no samples")
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sr != sample_rate:
        import torchaudio.functional as AF

        wav = AF.resample(wav, sr, sample_rate)
    return wav


def write_wav(path, wav: torch.Tensor, sample_rate: int) -> None:
    sf.write(str(path), wav.detach().float().cpu().numpy(), sample_rate, format="WAV", subtype="PCM_16")


def mel_spectrogram(wav: torch.Tensor, mel: dict) -> torch.Tensor:
    """[n_mel, frames] with upstream's own mel code, so training and inference see one definition."""
    from f5_tts.model.modules import MelSpec

    return MelSpec(**mel)(wav.unsqueeze(0))[0]
