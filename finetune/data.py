"""Training clips: load, tokenize, compute mel once, and group into frame-budget batches."""
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from .audio import load_audio, mel_spectrogram
from .errors import UserError
from .vocab import tokenize

# The labelled clips that the f5-tts package ships in f5_tts/infer/examples/basic/.
DEMO_CLIPS = [
    ("basic_ref_en.wav", "Some call me nature, others call me mother nature."),
    ("basic_ref_zh.wav", "对，这就是我，万人敬仰的太乙真人。"),
]


@dataclass
class Clip:
    audio: Path
    text: str
    tokens: list
    mel: torch.Tensor  # [n_mel, frames]

    @property
    def frames(self) -> int:
        return self.mel.shape[1]


def demo_rows() -> list[tuple[Path, str]]:
    from importlib.resources import files

    folder = Path(str(files("f5_tts").joinpath("infer/examples/basic")))
    return [(folder / name, text) for name, text in DEMO_CLIPS]


def csv_rows(folder) -> list[tuple[Path, str]]:
    folder = Path(folder)
    meta = folder / "metadata.csv"
    if not meta.is_file():
        raise UserError(f"{meta}: not found; data.path must be a folder holding metadata.csv (audio_path|text rows)")
    rows = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 2 or not parts[1].strip():
            raise UserError(f"{meta}: row {n}: expected `audio_path|text`, got {line[:60]!r}")
        if n == 1 and parts[0].strip().lower() in ("audio_file", "audio_path", "audio", "path"):
            continue  # header row
        rows.append((folder / parts[0].strip(), parts[1].strip()))
    if not rows:
        raise UserError(f"{meta}: no rows; add `audio_path|text` lines")
    return rows


def load_clips(data_cfg: dict, spec: dict) -> list[Clip]:
    rows = demo_rows() if data_cfg["kind"] == "demo" else csv_rows(data_cfg["path"])
    mel = spec["mel"]
    clips = []
    for audio, text in rows:
        wav = load_audio(audio, mel["target_sample_rate"])
        clips.append(Clip(audio, text, tokenize(text, spec["tokenizer"]), mel_spectrogram(wav, mel)))
    return clips


class FrameBatches:
    """Batches of clips whose frames sum to at most `frames_per_batch`, reshuffled each epoch.

    Clips are sorted by length so padding stays small, as upstream's DynamicBatchSampler does;
    the order of batches is a pure function of (seed, epoch), which makes resume exact.
    """

    def __init__(self, lengths: list[int], frames_per_batch: int, max_samples: int, seed: int):
        longest = max(lengths)
        if longest > frames_per_batch:
            raise UserError(
                f"data.frames_per_batch={frames_per_batch} is smaller than the longest clip ({longest} frames); "
                f"raise data.frames_per_batch to at least {longest}"
            )
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        self.batches, batch, frames = [], [], 0
        for i in order:
            if batch and (frames + lengths[i] > frames_per_batch or len(batch) == max_samples):
                self.batches.append(batch)
                batch, frames = [], 0
            batch.append(i)
            frames += lengths[i]
        self.batches.append(batch)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = list(self.batches)
        random.Random(self.seed + self.epoch).shuffle(order)
        return iter(order)

    def __len__(self) -> int:
        return len(self.batches)


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, clips: list[Clip]):
        self.clips = clips

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        return self.clips[i]


def collate(clips: list[Clip]) -> dict:
    longest = max(c.frames for c in clips)
    mel = torch.stack([torch.nn.functional.pad(c.mel, (0, longest - c.frames)) for c in clips])
    return {
        # [batch, frames, n_mel] as a view of [batch, n_mel, frames], exactly as upstream's trainer feeds CFM:
        # CFM draws its noise with randn_like, which follows the memory layout, so the layout is part of the math
        "mel": mel.permute(0, 2, 1),
        "lens": torch.tensor([c.frames for c in clips]),
        "text": [c.tokens for c in clips],
    }
