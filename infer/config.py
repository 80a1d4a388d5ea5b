"""The inference command line's keys (python -m infer ...)."""
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from finetune.lock.schema import VocoderKind, Weights


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


