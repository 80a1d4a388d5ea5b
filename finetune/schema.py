"""Structured-config schemas: Hydra checks every key and type against these at start-up."""
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


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


class Layout(str, Enum):
    f5tune = "f5tune"
    upstream = "upstream"


@dataclass
class InferConfig:
    run: Optional[str] = None
    model_file: Optional[str] = None  # an exported .safetensors (weights + manifest + vocab)
    gen_text: Optional[str] = None
    ref_audio: Optional[str] = None
    ref_text: Optional[str] = None
    ckpt: str = "last"  # last | <update>
    weights: Weights = Weights.ema
    allow_foreign: bool = False  # load a checkpoint that carries no binding to this run
    out: Optional[str] = None
    seed: int = 0
    nfe_step: int = 32
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    speed: float = 1.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    vocoder: Optional[VocoderKind] = None  # default: the vocoder the run was trained with
    vocoder_path: Optional[str] = None
    layout: Layout = Layout.f5tune  # export only: f5tune | upstream


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


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)
    ConfigStore.instance().store(name="prepare_schema", node=PrepareConfig)


NOISE = ("full_key:", "reference_type", "object_type", "To append", "Config search path", "provider=",
         "Set the environment")


def precompose(config_name: str, argv: list[str], help_command: str) -> None:
    """Compose the config once before Hydra does, so a misspelled key, a wrong type or an unknown option
    is one `error:` line rather than Hydra's screenful. A sweep (a=1,2) is checked with its first value.

    Left to Hydra: command lines with its own flags (--help, --cfg, --config-dir, ...), whose meaning
    this check would have to reproduce, and sweeps it cannot expand alone (glob)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .errors import UserError

    args, rest = get_args_parser().parse_known_args(argv)
    special = ("help", "hydra_help", "cfg", "info", "shell_completion", "config_dir", "config_path", "config_name",
               "experimental_rerun")
    if rest or any(getattr(args, name) for name in special):
        return
    try:
        overrides = []
        for o in OverridesParser.create().parse_overrides(args.overrides):
            if not o.is_sweep_override():
                overrides.append(o.input_line)
            elif o.is_choice_sweep() or o.is_range_sweep():
                try:
                    overrides.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
                except Exception:  # glob(): needs Hydra's config loader; Hydra checks it
                    pass
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name=config_name, overrides=overrides)
    except Exception as e:
        lines, cause = [], e
        while cause is not None:  # Hydra's message and the OmegaConf error under it, noise dropped
            lines += [ln.strip() for ln in str(cause).splitlines() if ln.strip() and not ln.strip().startswith(NOISE)]
            cause = cause.__cause__
        raise UserError(" ".join(dict.fromkeys(lines)) + f" ({help_command} lists every key and option)")


def plain(cfg, schema) -> dict:
    """A composed config re-merged into its schema as plain data: this also rejects `+key=value` extras."""
    from omegaconf import OmegaConf

    from .errors import UserError

    try:
        # merge plain data: merging the composed DictConfig would carry its added keys' types along
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(cfg))
        return OmegaConf.to_container(merged, resolve=True, throw_on_missing=True, enum_to_str=True)
    except Exception as e:  # OmegaConf's errors name the key; keep only that line
        raise UserError(f"config: {str(e).strip().splitlines()[0]}")


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
