"""The inference command line's keys (python -m infer ...), with their ranges."""
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from finetune.lock.upstream import upstream_default
from finetune.lock.schema import SEED_END, VocoderKind, Weights, key


class Layout(str, Enum):
    f5tune = "f5tune"
    upstream = "upstream"


@dataclass
class Sampling:
    """How speech is sampled: the keys inference and scoring share."""
    seed: int = key(0, ge=0, lt=SEED_END)  # the noise: the same seed, settings and device give the same wav
    nfe_step: int = key(32, gt=0)  # flow steps (CFM.sample's steps): fewer is faster
    cfg_strength: float = 2.0  # classifier-free guidance
    sway_sampling_coef: float = -1.0  # sway sampling of the step times (upstream's default)
    speed: float = key(1.0, gt=0)  # above 1: faster speech (a shorter duration for the same text)
    use_epss: bool = upstream_default("use_epss")  # upstream's Empirically Pruned Step Sampling; default: upstream's
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    vocoder: Optional[VocoderKind] = None  # default: the vocoder the run was trained with
    vocoder_path: Optional[str] = None  # a local vocos folder (config.yaml, pytorch_model.bin); None: the hub's


@dataclass
class InferConfig(Sampling):
    run: Optional[str] = None  # the run folder (runs/<name>) whose manifest rebuilds the model
    model_file: Optional[str] = None  # an exported .safetensors (weights + manifest + vocab)
    gen_text: Optional[str] = None  # None: a default sentence
    ref_audio: Optional[str] = None  # the voice to speak in; None: the run's reference clip
    ref_text: Optional[str] = None  # what is said in ref_audio (required with it)
    ckpt: str = "last"  # last | <update> | best (the best row of the run's scores.json)
    weights: Optional[Weights] = None  # ema | online; None: ema, or with ckpt=best the best row's
    allow_foreign: bool = False  # load a checkpoint that carries no binding to this run
    accept_unknown: bool = False  # speak symbols the vocab lacks as nothing (token 0), as upstream does silently
    out: Optional[str] = None  # a .wav file; default: runs/<name>/samples/<time>-<ckpt>-seed<N>.wav
    overwrite: bool = False  # replace an existing out= that this tool did not write
    layout: Layout = Layout.f5tune  # export only: f5tune | upstream
    adapter_only: bool = False  # export only: a LoRA run's adapter alone (its manifest names the base); else merged


@dataclass
class ScoreAsr:
    """asr.*: the recogniser whose word and character error rates score the synthesised speech."""
    model: Optional[str] = None  # a Whisper: local folder or hub id; None: no recognition scores
    language: Optional[str] = None  # None: detected per clip
    batch_size: int = key(8, gt=0)  # clips the recogniser hears at once


@dataclass
class ScoreSpeaker:
    """speaker.*: the speaker-verification model (an x-vector head) whose embeddings give speaker similarity."""
    model: Optional[str] = None  # local folder or hub id; None: no similarity scores


@dataclass
class ScoreConfig(Sampling):
    """python -m infer.score's keys, asr.* and speaker.* in their sections."""
    run: Optional[str] = None  # the run folder to score (it needs held-out clips: data.val_clips)
    asr: ScoreAsr = key(factory=ScoreAsr)
    speaker: ScoreSpeaker = key(factory=ScoreSpeaker)
    ckpt: str = "all"  # all | last | <update>[,<update>...]
    weights: str = "ema,online"  # ema | online | ema,online
    max_clips: Optional[int] = key(None, gt=0)  # synthesise at most this many held-out clips; the loss uses all
    quality: bool = True  # the predicted MOS of the synthesised speech (distillmos: offline, weights in its package)
