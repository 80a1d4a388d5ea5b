"""Speech-like synthetic clips, metadata files and a local vocos folder, for the tests and the benchmarks."""
import random
from pathlib import Path

import numpy as np
import soundfile as sf

WORDS = ("the quick brown fox jumps over a lazy dog while seven bright stars shine above quiet hills "
         "and rivers run to the sea under a pale morning light").split()


def speechlike(seconds: float, sr: int = 24000, seed: int = 0) -> np.ndarray:
    """A voiced signal with a gliding pitch, a few harmonics and syllable-rate loudness, plus breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    wav = 0.3 * voiced * syllables + 0.01 * rng.standard_normal(t.size)
    return (wav / max(np.abs(wav).max(), 1e-9) * 0.8).astype(np.float32)


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def write_clips(folder, n: int, seed: int = 0, min_s: float = 1.0, max_s: float = 6.0, sr: int = 24000):
    """n wav files in folder/wavs and their texts; returns [(absolute path, text)]."""
    rng = random.Random(seed)
    wavs = Path(folder) / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        seconds = rng.uniform(min_s, max_s)
        path = wavs / f"clip_{i:05d}.wav"
        sf.write(path, speechlike(seconds, sr, seed * 100_000 + i), sr)
        rows.append((path.resolve(), sentence(rng, max(2, int(seconds * 2.5)))))
    return rows


def write_metadata(path, rows, header: bool = True) -> Path:
    """upstream's prepare_csv_wavs format: `audio_file|text`, absolute paths."""
    lines = (["audio_file|text"] if header else []) + [f"{audio}|{text}" for audio, text in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def write_vocos(folder, dim: int = 512, intermediate_dim: int = 1536, num_layers: int = 8) -> Path:
    """A local vocos folder (config.yaml + pytorch_model.bin) as vocoder_path= and upstream's
    load_vocoder(is_local=True) read it: charactr/vocos-mel-24khz's layout (its sizes by default),
    random weights (no hub)."""
    import torch
    import yaml

    from finetune.lock.vocoder import _build_vocos

    mel = {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256}
    config = {
        "feature_extractor": {"class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
                              "init_args": {**mel, "n_mels": 100, "padding": "center"}},
        "backbone": {"class_path": "vocos.models.VocosBackbone",
                     "init_args": {"input_channels": 100, "dim": dim, "intermediate_dim": intermediate_dim,
                                   "num_layers": num_layers}},
        "head": {"class_path": "vocos.heads.ISTFTHead",
                 "init_args": {"dim": dim, "n_fft": 1024, "hop_length": 256, "padding": "same"}},
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    torch.save(_build_vocos(folder / "config.yaml").state_dict(), folder / "pytorch_model.bin")
    return folder
