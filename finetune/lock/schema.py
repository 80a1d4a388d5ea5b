"""Structured-config schemas: Hydra checks every key and type against these at start-up."""
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from omegaconf import MISSING

class Backbone(str, Enum):  # the allow-list: nothing is ever imported by class path
    DiT = "DiT"
    UNetT = "UNetT"
    MMDiT = "MMDiT"


class Tokenizer(str, Enum):
    pinyin = "pinyin"
    char = "char"


class DataKind(str, Enum):
    demo = "demo"  # the two clips f5-tts ships, prepared in memory
    prepared = "prepared"  # a folder written by python -m finetune.prepare


class OptimizerKind(str, Enum):
    adamw = "adamw"
    adamw8bit = "adamw8bit"  # bitsandbytes' AdamW8bit, upstream's bnb_optimizer


class LoggerKind(str, Enum):
    none = "none"
    tensorboard = "tensorboard"
    wandb = "wandb"


class VocoderKind(str, Enum):
    vocos = "vocos"
    griffinlim = "griffinlim"


class MixedPrecision(str, Enum):
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


class Weights(str, Enum):
    ema = "ema"
    online = "online"


@dataclass
class ArchConfig:
    dim: int = MISSING
    depth: int = MISSING
    heads: int = MISSING
    ff_mult: int = MISSING
    text_dim: Optional[int] = None  # None: the backbone's default (E2: the mel dim)
    text_mask_padding: bool = True
    qk_norm: Optional[str] = None
    conv_layers: Optional[int] = None
    pe_attn_head: Optional[int] = None
    attn_backend: Optional[str] = None
    attn_mask_enabled: Optional[bool] = None
    checkpoint_activations: Optional[bool] = None


@dataclass
class MelConfig:
    target_sample_rate: int = 24000
    n_mel_channels: int = 100
    hop_length: int = 256
    win_length: int = 1024
    n_fft: int = 1024
    mel_spec_type: str = "vocos"


@dataclass
class ModelConfig:
    name: str = MISSING
    upstream: Optional[str] = None  # upstream config this mirrors (F5TTS_v1_Base, ...)
    backbone: Backbone = MISSING
    arch: ArchConfig = field(default_factory=ArchConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    tokenizer: Tokenizer = Tokenizer.pinyin
    vocab: Optional[str] = None  # None: the vocab.txt that f5-tts ships (2545 symbols)
    pretrained: Optional[str] = None


@dataclass
class DataConfig:
    name: str = MISSING
    kind: DataKind = MISSING
    path: Optional[str] = None  # the prepared dataset folder
    frames_per_batch: int = 38400  # mel frames per batch, summed over its clips
    max_samples: int = 64


@dataclass
class OptimConfig:
    name: OptimizerKind = OptimizerKind.adamw
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_updates: int = 100
    max_grad_norm: float = 1.0
    grad_accumulation_steps: int = 1


@dataclass
class EmaConfig:
    beta: float = 0.9999
    update_after_step: int = 100
    update_every: int = 10


@dataclass
class TrainConfig:
    epochs: int = 10
    max_updates: Optional[int] = None
    save_every: int = 1000
    keep_last_n: int = -1  # -1 keeps every checkpoint; N keeps the newest N
    log_samples: bool = False  # at each checkpoint: a wav in samples/ and, with a logger, in the logger
    sample_nfe_step: int = 16
    log_every: int = 10
    seed: int = 666
    mixed_precision: MixedPrecision = MixedPrecision.no
    num_workers: int = 0
    ema: EmaConfig = field(default_factory=EmaConfig)


@dataclass
class LoggerConfig:
    kind: LoggerKind = LoggerKind.none
    project: str = "f5tune"


@dataclass
class VocoderConfig:
    kind: VocoderKind = VocoderKind.vocos
    path: Optional[str] = None
    n_iter: int = 32


@dataclass
class VocabConfig:
    # symbols of the data that the model's vocab lacks stop a run unless one of these is chosen
    extend: bool = False  # append them to the vocab and grow the text embedding
    accept_unknown: bool = False  # map them to token 0, as upstream does without a word


@dataclass
class RunConfig:
    root: str = "runs"
    name: Optional[str] = None


@dataclass
class FinetuneConfig:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    run: RunConfig = field(default_factory=RunConfig)
    pretrained: Optional[str] = None


SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig,
            "logger": LoggerConfig, "vocoder": VocoderConfig}


@dataclass
class PrepareConfig:
    model: ModelConfig = MISSING  # its mel settings are the dataset's
    input: str = MISSING  # metadata file, LJSpeech folder, folder of audio + .txt, or upstream-prepared folder
    out: str = MISSING
    format: str = "auto"  # auto | csv | ljspeech | folder | upstream
    strict: bool = False  # any bad row fails the preparation instead of being skipped
    min_seconds: float = 0.3
    max_seconds: float = 30.0
    silence_db: float = -60.0  # a clip whose peak is below this is silent
    workers: Optional[int] = None  # None: one per CPU core


# Types are the schema's job; these are the ranges a type cannot say. key: the smallest allowed value
MINIMUM = {"train.epochs": 1, "train.save_every": 1, "train.log_every": 1, "train.sample_nfe_step": 1,
           "train.num_workers": 0, "train.ema.update_every": 1, "train.ema.update_after_step": 0,
           "optim.grad_accumulation_steps": 1, "optim.warmup_updates": 0, "optim.lr": 0, "optim.weight_decay": 0,
           "optim.max_grad_norm": 0, "data.frames_per_batch": 1, "data.max_samples": 1}


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config as {"section.key": value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_ranges(cfg: dict) -> None:
    """A fine-tune config's numbers, checked before anything is written (a 0 would divide by zero later)."""
    from .errors import UserError

    at = flatten(cfg)
    for key, low in MINIMUM.items():
        if at[key] < low:
            raise UserError(f"{key}={at[key]}: must be {low} or more")
    if at["train.max_updates"] is not None and at["train.max_updates"] < 1:
        raise UserError(f"train.max_updates={at['train.max_updates']}: must be 1 or more, or null (from train.epochs)")
    if at["train.keep_last_n"] == 0 or at["train.keep_last_n"] < -1:
        raise UserError(f"train.keep_last_n={at['train.keep_last_n']}: keep the newest N >= 1, or -1 for all")
