"""The preparation's config schema (python -m finetune.prepare) and the ranges its numbers must hold."""
import math
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from .lock.schema import ModelConfig, flatten


@dataclass
class SliceConfig:
    """How long recordings are cut into clips at their silences (transcribe=true)."""
    min_seconds: float = 3.0  # a clip ends at the first silence after this length
    max_seconds: float = 15.0  # and is never longer (speech without such a silence is cut at its quietest point)
    silence_db: float = -40.0  # frames whose loudness (RMS, dBFS) is under this are silence
    min_silence: float = 0.3  # seconds: shorter pauses do not end a clip
    pad: float = 0.1  # seconds of the surrounding silence kept on each side of a clip
    detector: str = "energy"  # energy: frames under silence_db are silence; vad: a voice-activity model finds speech


@dataclass
class AsrConfig:
    """The recogniser that writes the clips' first transcripts (transcribe=true)."""
    model: str = "openai/whisper-large-v3-turbo"  # a hub id or a local folder (config.json + *.safetensors)
    language: Optional[str] = None  # None: detected per clip; or a Whisper language (en, english, de, ...)
    device: str = "auto"  # auto (cuda when there is one), cpu, cuda, cuda:1, ...
    batch_size: int = 8


@dataclass
class LoudnessConfig:
    """Every prepared clip at one integrated loudness (ITU-R BS.1770) before its mel is computed."""
    target_lufs: Optional[float] = -20.0  # None: clips as recorded
    peak_db: float = -1.0  # no sample over this (dBFS) after the gain: a look-ahead limiter takes the peaks down


@dataclass
class QualityConfig:
    """A speech-quality score (MOS 1-5) per clip by a predictor whose weights ship in its package (offline)."""
    model: Optional[str] = "distillmos"  # None: no scores (and no filter)
    device: str = "auto"  # auto (cuda when there is one), cpu, cuda, cuda:1, ...


@dataclass
class FilterConfig:
    """Clips left out by their scores (reported per clip; a person may restore one in Review)."""
    min_quality: Optional[float] = None  # leave out clips whose quality score is under this; None: keep all


@dataclass
class PrepareConfig:
    model: ModelConfig = MISSING  # its mel settings are the dataset's
    input: str = MISSING  # metadata file, LJSpeech folder, folder of audio + .txt, upstream-prepared folder; or recordings
    out: str = MISSING
    format: str = "auto"  # auto | csv | ljspeech | folder | upstream
    strict: bool = False  # any bad row fails the preparation instead of being skipped
    min_seconds: float = 0.3
    max_seconds: float = 30.0
    silence_db: float = -60.0  # a clip whose peak is below this is silent
    loud_db: float = 6.0  # a clip whose peak is above this (dBFS) is not on a -1..1 scale
    max_chars_per_second: float = 40.0  # more text than this per second of audio (or per clip under 1 s) is refused
    workers: Optional[int] = None  # None: one per CPU core
    transcribe: bool = False  # input is a folder of recordings without transcripts: slice, transcribe, prepare
    slice: SliceConfig = field(default_factory=SliceConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    loudness: LoudnessConfig = field(default_factory=LoudnessConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)


DETECTORS = ("energy", "vad")
QUALITY_MODELS = ("distillmos",)
WHISPER_SECONDS = 30.0  # Whisper hears 30 s at a time; longer clips would be cut short

# Every number of the config a type cannot bound: (key, test, what it must be), checked in this order.
RANGES = [
    ("min_seconds", lambda v, c: v > 0, "must be more than 0"),
    ("max_seconds", lambda v, c: v > c["min_seconds"], "must be more than min_seconds={min_seconds}"),
    ("loud_db", lambda v, c: v > c["silence_db"], "must be more than silence_db={silence_db}"),
    ("max_chars_per_second", lambda v, c: v > 0, "must be more than 0"),
    ("workers", lambda v, c: v is None or v >= 1, "must be 1 or more, or null (one per CPU core)"),
    ("slice.min_seconds", lambda v, c: v > 0, "must be more than 0"),
    ("slice.max_seconds", lambda v, c: v > c["slice"]["min_seconds"],
     "must be more than slice.min_seconds={slice[min_seconds]}"),
    ("slice.max_seconds", lambda v, c: v <= c["max_seconds"],
     "must be at most max_seconds={max_seconds}, or every longer clip would be refused"),
    ("slice.max_seconds", lambda v, c: v <= WHISPER_SECONDS, f"must be at most {WHISPER_SECONDS:g}, what Whisper hears at once"),
    ("slice.silence_db", lambda v, c: v < 0, "must be under 0 (dBFS)"),
    ("slice.min_silence", lambda v, c: v > 0, "must be more than 0"),
    ("slice.pad", lambda v, c: v >= 0, "must be 0 or more"),
    ("slice.detector", lambda v, c: v in DETECTORS, f"must be one of {', '.join(DETECTORS)}"),
    ("asr.batch_size", lambda v, c: v >= 1, "must be 1 or more"),
    ("loudness.target_lufs", lambda v, c: v is None or -70 < v < 0, "must be between -70 and 0 (LUFS), or null (off)"),
    ("loudness.peak_db", lambda v, c: -20 <= v <= 0, "must be between -20 and 0 (dBFS)"),
    ("quality.model", lambda v, c: v in (None, *QUALITY_MODELS),
     f"must be {' or '.join(QUALITY_MODELS)} (its weights ship in its package), or null (no scores)"),
    ("filter.min_quality", lambda v, c: v is None or 1 <= v <= 5, "must be between 1 and 5 (MOS), or null (keep all)"),
    ("filter.min_quality", lambda v, c: v is None or c["quality"]["model"] is not None,
     "needs quality scores: set quality.model=distillmos, or filter.min_quality=null"),
    ("asr.model", lambda v, c: bool(v.strip()), "must name a hub id or a local folder"),
]


def check_ranges(cfg: dict) -> None:
    """Every number in range and every float finite, before anything is written."""
    from .lock.errors import UserError

    at = flatten({k: v for k, v in cfg.items() if k != "model"})
    for key, value in at.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key}={value}: must be a finite number", code="range")
    for key, test, what in RANGES:
        if not test(at[key], cfg):
            raise UserError(f"{key}={at[key]}: {what.format(**cfg)}", code="range")
    for key in ("input", "out"):
        if not str(cfg[key]).strip():
            raise UserError(f"{key}= is empty; give a {'folder or file to read' if key == 'input' else 'folder to write'}", code="range")
