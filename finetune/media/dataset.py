"""What a run trains on: a dataset folder that python -m finetune.prepare wrote (read, checked, its content
hash recomputed, its mel files checked from their headers) or the demo clips, split into training and
held-out clips by content hash. Part of the lock: inference's scoring reads the held-out clips too."""
import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from .audio import demo_rows, load_audio, mel_spectrogram
from ..lock.checkpoints import header
from ..lock.errors import UserError, first_line
from ..lock.files import sha256_bytes, sha256_file
from ..lock.vocab import tokenize

DATASET_FORMAT = "f5tune-dataset/1"


def dataset_hash(mel: dict, clips: list[dict], loudness: dict | None = None) -> str:
    """What a run trains on: the mel settings, the loudness the clips were set to (the summary's `loudness`; None:
    as recorded) and, per clip, its audio bytes, text and length."""
    body = {"mel": mel, "clips": [[c["audio_sha256"], c["text"], c.get("tokens"), c["frames"]] for c in clips]}
    if loudness:  # absent when off: a dataset prepared before loudness existed keeps its hash
        body["loudness"] = {k: loudness.get(k) for k in ("target_lufs", "peak_db")}
    return sha256_bytes(json.dumps(body, sort_keys=True, ensure_ascii=False).encode())


def read_dataset(folder) -> dict:
    path = Path(folder) / "dataset.json"
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; data.path must be a folder written by python -m finetune.prepare", code="missing")
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({first_line(e, 80)}); prepare the dataset again", code="io")
    if not isinstance(ds, dict) or not isinstance(ds.get("summary"), dict) or ds["summary"].get("format") != DATASET_FORMAT:
        raise UserError(f"{path}: not a {DATASET_FORMAT} dataset; prepare it again with python -m finetune.prepare", code="data")
    problem = _dataset_problem(ds)
    if problem:
        raise UserError(f"{path}: {problem}; this is not a file python -m finetune.prepare wrote: prepare it again", code="data")
    return ds


MEL_FILE = re.compile(r"mel/[^/\\]+\.safetensors")  # inside the dataset folder's mel/, nowhere else


def _dataset_problem(ds: dict):
    summary, clips = ds["summary"], ds.get("clips")
    if not isinstance(summary.get("mel"), dict) or not isinstance(summary.get("sha256"), str):
        return "summary: needs mel and sha256"
    if summary.get("loudness") is not None and not isinstance(summary["loudness"], dict):
        return "summary: loudness must be a mapping or null"
    if not isinstance(clips, list) or not clips:
        return "clips: missing or empty"
    for n, c in enumerate(clips):
        ok = isinstance(c, dict) and all(isinstance(c.get(k), str) for k in ("row", "audio", "text", "audio_sha256")) \
            and isinstance(c.get("frames"), int) and c["frames"] > 0 and isinstance(c.get("mel"), str) \
            and MEL_FILE.fullmatch(c["mel"]) and ".." not in c["mel"] \
            and (c.get("tokens") is None or (isinstance(c["tokens"], list) and all(isinstance(t, str) for t in c["tokens"])))
        if not ok:
            return f"clips[{n}]: needs row, audio, text, audio_sha256, frames > 0 and mel (a file under mel/)"
    return None


@dataclass
class Clip:
    where: str  # the row it came from, as reports name it
    audio: Path
    text: str
    tokens: list
    frames: int
    mel: Optional[torch.Tensor] = None  # [n_mel, frames]; None: read from mel_file when a batch needs it
    mel_file: Optional[Path] = None
    sha: str = ""  # the audio's sha256: with the text, what the held-out split is drawn by

    def with_mel(self) -> "Clip":
        if self.mel is not None:
            return self
        from safetensors.torch import load_file

        return replace(self, mel=load_file(self.mel_file)["mel"])


def demo_clips(spec: dict) -> tuple[list[Clip], dict]:
    """Two clips: small enough to prepare in memory at every start."""
    clips, records = [], []
    for audio, text in demo_rows():
        mel = mel_spectrogram(load_audio(audio, spec["mel"]["target_sample_rate"]), spec["mel"])
        sha = sha256_file(audio)
        clips.append(Clip(audio.name, audio, text, tokenize(text, spec["tokenizer"]), mel.shape[1], mel, sha=sha))
        records.append({"audio_sha256": sha, "text": text, "frames": mel.shape[1]})
    return clips, {"path": None, "sha256": dataset_hash(spec["mel"], records), "reference": str(clips[0].audio)}


def prepared_clips(folder, spec: dict) -> tuple[list[Clip], dict]:
    if not folder:
        raise UserError("data.path= is required: the folder written by python -m finetune.prepare input=... out=...", code="usage")
    folder = Path(folder).expanduser().resolve()
    ds = read_dataset(folder)
    summary = ds["summary"]
    diffs = [f"{k}: {summary['mel'].get(k)} -> {v}" for k, v in spec["mel"].items() if summary["mel"].get(k) != v]
    if diffs:
        raise UserError(f"data.path={folder} was prepared with other mel settings than model={spec['name']} uses "
                        f"({'; '.join(diffs)}); prepare it again with python -m finetune.prepare model={spec['name']}", code="data")
    again = f"run python -m finetune.prepare input={summary.get('source', {}).get('input')} out={folder} again"
    # recomputed, not read: an edited text or frame count in dataset.json must change what runs record
    sha = dataset_hash(summary["mel"], ds["clips"], summary.get("loudness"))
    if sha != summary["sha256"]:
        raise UserError(f"{folder / 'dataset.json'}: its clips no longer match the hash prepare recorded (edited "
                        f"by hand?); {again}", code="data")
    clips, expected = [], None
    for c in ds["clips"]:
        mel_file = folder / c["mel"]
        expected = f"[{spec['mel']['n_mel_channels']}, {c['frames']}]"
        try:
            shapes, _ = header(mel_file)  # the header alone: a swapped or cut file shows in its shape
        except UserError as e:
            raise UserError(f"{mel_file} ({c['row']}): missing or damaged ({str(e).split(': ', 1)[-1][:80]}); {again}", code="data")
        if not shapes.get("mel", "").endswith(expected):
            raise UserError(f"{mel_file} ({c['row']}): holds mel {shapes.get('mel')}, the dataset says {expected}; {again}", code="data")
        tokens = c.get("tokens") or tokenize(c["text"], spec["tokenizer"])
        clips.append(Clip(c["row"], Path(c["audio"]), c["text"], tokens, c["frames"], mel_file=mel_file,
                          sha=c["audio_sha256"]))
    info = {"path": str(folder), "sha256": sha, "reference": str(folder / "reference.wav")}
    if summary.get("asr"):  # transcribed by a recogniser: which one, and how much text a person set
        info |= {"asr": summary["asr"], "text_by": summary.get("text_by")}
    return clips, info


def load_clips(data_cfg: dict, spec: dict) -> tuple[list[Clip], dict]:
    """The clips a run trains on, and what the manifest records of them (path, sha256, clips, hours)."""
    clips, info = demo_clips(spec) if data_cfg["kind"] == "demo" else prepared_clips(data_cfg["path"], spec)
    hop, sr = spec["mel"]["hop_length"], spec["mel"]["target_sample_rate"]
    info |= {"clips": len(clips), "hours": round(sum(c.frames for c in clips) * hop / sr / 3600, 4)}
    return clips, info


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


def split(clips: list[Clip], val_clips: float) -> tuple[list[Clip], list[Clip]]:
    """(training clips, held-out clips). data.val_clips=N holds out N clips, a fraction below 1 that share of
    them; which ones is decided by each clip's content (audio hash and text), so the same dataset always
    gives the same split, whatever order its rows come in."""
    if not val_clips:
        return clips, []
    if val_clips >= 1 and val_clips != int(val_clips):
        raise UserError(f"data.val_clips={val_clips}: a whole number of clips, or a fraction below 1", code="range")
    n = int(val_clips) if val_clips >= 1 else max(1, round(val_clips * len(clips)))
    if n >= len(clips):
        raise UserError(f"data.val_clips={val_clips} holds out {n} of the dataset's {len(clips)} clips and leaves none "
                        "to train on; hold out fewer", code="data")
    key = {i: hashlib.sha256(f"{c.sha}|{c.text}".encode()).hexdigest() for i, c in enumerate(clips)}
    held = set(sorted(key, key=key.get)[:n])
    return [c for i, c in enumerate(clips) if i not in held], [c for i, c in enumerate(clips) if i in held]


def split_record(held: list[Clip]) -> dict:
    """What the manifest records of the held-out clips."""
    return {"clips": len(held), "rows": [c.where for c in held], "audio_sha256": [c.sha for c in held]}
