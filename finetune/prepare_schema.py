"""The preparation's config schema (python -m finetune.prepare) and the ranges its numbers must hold."""
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from omegaconf import MISSING

from .lock.schema import ModelConfig, flatten, key, problems


class Detector(str, Enum):
    energy = "energy"  # frames under slice.silence_db are silence
    vad = "vad"  # a voice-activity model (silero-vad) finds speech


class QualityModel(str, Enum):
    distillmos = "distillmos"  # its weights ship in its package: offline


WHISPER_SECONDS = 30.0  # Whisper hears 30 s at a time; longer clips would be cut short


@dataclass
class SliceConfig:
    """How long recordings are cut into clips at their silences (transcribe=true)."""
    min_seconds: float = key(3.0, gt=0)  # a clip ends at the first silence after this length
    # and is never longer (speech without such a silence is cut at its quietest point); Whisper hears 30 s at once
    max_seconds: float = key(15.0, gt=0, le=WHISPER_SECONDS)
    silence_db: float = key(-40.0, lt=0)  # frames whose loudness (RMS, dBFS) is under this are silence
    min_silence: float = key(0.3, gt=0)  # seconds: shorter pauses do not end a clip
    pad: float = key(0.1, ge=0)  # seconds of the surrounding silence kept on each side of a clip
    detector: Detector = Detector.energy


@dataclass
class AsrConfig:
    """The recogniser that writes the clips' first transcripts (transcribe=true)."""
    model: str = key("openai/whisper-large-v3-turbo", nonempty=True)  # a hub id or a local folder
    language: Optional[str] = None  # None: detected per clip; or a Whisper language (en, english, de, ...)
    device: str = "auto"  # auto (cuda when there is one), cpu, cuda, cuda:1, ...
    batch_size: int = key(8, gt=0)


@dataclass
class LoudnessConfig:
    """Every prepared clip at one integrated loudness (ITU-R BS.1770) before its mel is computed."""
    target_lufs: Optional[float] = key(-20.0, gt=-70, lt=0)  # None: clips as recorded
    peak_db: float = key(-1.0, ge=-20, le=0)  # no sample over this (dBFS) after the gain: a look-ahead limiter


@dataclass
class QualityConfig:
    """A speech-quality score (MOS 1-5) per clip by a predictor whose weights ship in its package (offline)."""
    model: Optional[QualityModel] = QualityModel.distillmos  # None: no scores (and no filter)
    device: str = "auto"  # auto (cuda when there is one), cpu, cuda, cuda:1, ...


@dataclass
class FilterConfig:
    """Clips left out by their scores (reported per clip; a person may restore one in Review)."""
    min_quality: Optional[float] = key(None, ge=1, le=5)  # leave out clips scored under this; None: keep all


@dataclass
class PrepareConfig:
    model: ModelConfig = MISSING  # its mel settings are the dataset's
    # metadata file, LJSpeech folder, folder of audio + .txt, upstream-prepared folder; or recordings
    input: str = key(MISSING, nonempty=True)
    out: str = key(MISSING, nonempty=True)
    format: str = "auto"  # auto | csv | ljspeech | folder | upstream
    strict: bool = False  # any bad row fails the preparation instead of being skipped
    min_seconds: float = key(0.3, gt=0)
    max_seconds: float = 30.0
    silence_db: float = -60.0  # a clip whose peak is below this is silent
    loud_db: float = 6.0  # a clip whose peak is above this (dBFS) is not on a -1..1 scale
    max_chars_per_second: float = key(40.0, gt=0)  # more text than this per second of audio (or per clip under 1 s)
    workers: Optional[int] = key(None, gt=0)  # None: one per CPU core
    transcribe: bool = False  # input is a folder of recordings without transcripts: slice, transcribe, prepare
    slice: SliceConfig = key(factory=SliceConfig)
    asr: AsrConfig = key(factory=AsrConfig)
    loudness: LoudnessConfig = key(factory=LoudnessConfig)
    quality: QualityConfig = key(factory=QualityConfig)
    filter: FilterConfig = key(factory=FilterConfig)


# What one key's bounds cannot say (the schema's field metadata says the rest): how keys bound each other.
RELATIONS = [
    ("max_seconds", lambda v, c: v > c["min_seconds"], "must be more than min_seconds={min_seconds}"),
    ("loud_db", lambda v, c: v > c["silence_db"], "must be more than silence_db={silence_db}"),
    ("slice.max_seconds", lambda v, c: v > c["slice"]["min_seconds"],
     "must be more than slice.min_seconds={slice[min_seconds]}"),
    ("slice.max_seconds", lambda v, c: v <= c["max_seconds"],
     "must be at most max_seconds={max_seconds}, or every longer clip would be refused"),
    ("filter.min_quality", lambda v, c: v is None or c["quality"]["model"] is not None,
     "needs quality scores: set quality.model=distillmos, or filter.min_quality=null"),
]


def check_ranges(cfg: dict) -> None:
    """Every key of its type and in its range (the schema's check), then the relations between keys, before
    anything is written."""
    from .lock.errors import UserError

    # the model section is the model config's, checked where it is composed (the web app checks without one)
    found = [p for p in problems(cfg, PrepareConfig) if not p.startswith("model")]
    if found:
        raise UserError(found[0], code="range")
    at = flatten({k: v for k, v in cfg.items() if k != "model"})
    for name, test, what in RELATIONS:
        if not test(at[name], cfg):
            raise UserError(f"{name}={at[name]}: {what.format(**cfg)}", code="range")
