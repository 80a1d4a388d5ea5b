"""The config schemas, and what each key is to a run, declared once on its field.

Hydra checks keys and types against these dataclasses at start-up; `check()` adds the ranges a type cannot
say, and checks a config read back from a file (a manifest, an amendment) the same way. Each key's kind
decides who may change it: resume, `pretrained=` and inference derive their rules from `kind_of()`.
"""
import functools
import math
import re
import typing
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

from .errors import UserError
from .upstream import upstream_default

# What a key is to a run:
MODEL = "model"  # shapes or changes what the model computes: fixed for a run, compared for pretrained=
RUNTIME = "runtime"  # how the model runs, not what it computes (no tensor or output changes): free to change
TRAINING = "training"  # how training proceeds: a resume may amend it (recorded in amendments.jsonl)
FIXED = "fixed"  # fixed for the life of a run: its name, data, vocab, saved optimizer kind, ...

SEED_END = 2**32  # numpy and torch seeds: 0 <= seed < 2**32


def key(default=NO_DEFAULT, kind: Optional[str] = None, *, factory=None, **bounds):
    """A field with its kind (None: its section's) and bounds: ge, gt, le, lt; floats must be finite anyway."""
    meta = {"kind": kind, **bounds}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


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


class AdapterKind(str, Enum):
    none = "none"  # a full fine-tune: every tensor trains
    lora = "lora"  # LoRA on a frozen pretrained base (peft)


LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.0.0", "ff.2"]  # attention and feed-forward projections


@dataclass
class ArchConfig:
    """Every constructor argument of upstream's backbones (DiT, UNetT, MMDiT) but the two the builder derives
    (text_num_embeds from the vocab, mel_dim from the mel settings); tests/test_upstream_args.py fails when the
    installed f5-tts has one this lacks. None: the installed upstream's default for the chosen backbone, which
    the manifest records filled in. `shapes=False`: a checkpoint's tensor shapes cannot show the value."""
    KIND: ClassVar[str] = MODEL
    dim: int = key(MISSING, gt=0)
    depth: int = key(MISSING, gt=0)
    heads: int = key(MISSING, gt=0)
    ff_mult: int = key(MISSING, gt=0)
    dim_head: Optional[int] = key(None, gt=0)
    text_dim: Optional[int] = key(None, gt=0)  # None: the backbone's default (E2: the mel dim)
    text_mask_padding: Optional[bool] = key(None, shapes=False)  # F5-TTS v1: true; v0 and E2: false
    # text embedding upsampled by averaging (upstream 1.1.8): the same shapes, other math; needs text_mask_padding
    text_embedding_average_upsampling: Optional[bool] = key(None, shapes=False)
    qk_norm: Optional[str] = None
    conv_layers: Optional[int] = key(None, ge=0)
    pe_attn_head: Optional[int] = key(None, ge=0, shapes=False)
    long_skip_connection: Optional[bool] = None
    skip_connect_type: Optional[str] = None  # UNetT: add | concat | none
    attn_mask_enabled: Optional[bool] = key(None, shapes=False)
    dropout: Optional[float] = key(None, TRAINING, ge=0, lt=1)  # training only: inference runs in eval mode
    attn_backend: Optional[str] = key(None, RUNTIME)
    checkpoint_activations: Optional[bool] = key(None, RUNTIME)  # recompute activations: less memory, same math


@dataclass
class CfmConfig:
    """Every constructor argument of upstream's CFM but those the builder derives (transformer, num_channels,
    mel_spec_module, mel_spec_kwargs, vocab_char_map). None: the installed upstream's default."""
    KIND: ClassVar[str] = MODEL
    sigma: Optional[float] = None
    odeint_kwargs: Optional[dict[str, Any]] = None  # how sampling integrates ({method: euler})
    audio_drop_prob: Optional[float] = key(None, TRAINING, ge=0, le=1)  # the training objective's dropouts
    cond_drop_prob: Optional[float] = key(None, TRAINING, ge=0, le=1)
    frac_lengths_mask: Optional[list[float]] = key(None, TRAINING)


@dataclass
class MelConfig:
    KIND: ClassVar[str] = MODEL
    target_sample_rate: int = key(24000, gt=0)
    n_mel_channels: int = key(100, gt=0)
    hop_length: int = key(256, gt=0)
    win_length: int = key(1024, gt=0)
    n_fft: int = key(1024, gt=0)
    mel_spec_type: str = "vocos"


@dataclass
class ModelConfig:
    KIND: ClassVar[str] = MODEL
    name: str = key(MISSING, FIXED)  # labels: two configs of one architecture may start from each other
    upstream: Optional[str] = key(None, FIXED)  # upstream config this mirrors (F5TTS_v1_Base, ...)
    backbone: Backbone = MISSING
    arch: ArchConfig = key(factory=ArchConfig)
    cfm: CfmConfig = key(factory=CfmConfig)
    mel: MelConfig = key(factory=MelConfig)
    tokenizer: Tokenizer = Tokenizer.pinyin
    vocab: Optional[str] = key(None, FIXED)  # None: the vocab.txt that f5-tts ships (2545 symbols)
    pretrained: Optional[str] = key(None, FIXED)


@dataclass
class DataConfig:
    KIND: ClassVar[str] = FIXED
    name: str = MISSING
    kind: DataKind = MISSING
    path: Optional[str] = MISSING  # the prepared dataset folder (null for the demo)
    # mel frames per batch, summed over its clips; auto: the largest whose measured update fits the machine
    frames_per_batch: Any = key(38400, TRAINING, gt=0, words=("auto",))
    max_samples: int = key(64, TRAINING, gt=0)
    val_clips: float = key(0.0, ge=0)  # held out of training: N clips, or a fraction below 1 (by content hash)


@dataclass
class OptimConfig:
    KIND: ClassVar[str] = TRAINING
    name: OptimizerKind = key(OptimizerKind.adamw, FIXED)  # the saved state only loads into its own optimizer
    lr: float = key(1e-5, gt=0)
    weight_decay: float = key(0.01, ge=0)
    warmup_updates: int = key(100, ge=0)
    max_grad_norm: float = key(1.0, ge=0)  # 0: no clipping
    grad_accumulation_steps: int = key(1, gt=0)


@dataclass
class EarlyStopConfig:
    KIND: ClassVar[str] = TRAINING
    # stop (as SIGTERM does: a checkpoint, state `stopped`) after this many validations in a row without the
    # held-out loss improving on its best by min_delta; None: never. Needs data.val_clips.
    patience: Optional[int] = key(None, gt=0)
    min_delta: float = key(0.0, ge=0)


@dataclass
class EmaConfig:
    KIND: ClassVar[str] = TRAINING
    beta: float = key(0.9999, ge=0, le=1)
    update_after_step: int = key(100, ge=0)
    update_every: int = key(10, gt=0)


@dataclass
class TrainConfig:
    KIND: ClassVar[str] = TRAINING
    epochs: int = key(10, gt=0)
    max_updates: Optional[int] = key(None, gt=0)  # when set, stops after this many updates
    save_every: int = key(1000, gt=0)
    keep_last_n: int = key(-1, ge=-1, ne=0)  # -1 keeps every checkpoint; N >= 1 keeps the newest N
    log_samples: bool = False  # at each checkpoint: a wav in samples/ and, with a logger, in the logger
    sample_nfe_step: int = key(16, gt=0)
    sample_use_epss: bool = upstream_default("use_epss")  # CFM.sample's use_epss for the samples; default: upstream's
    log_every: int = key(10, gt=0)
    val_every: Optional[int] = key(None, gt=0)  # validation loss every N updates too (always at checkpoints)
    seed: int = key(666, ge=0, lt=SEED_END)
    mixed_precision: MixedPrecision = MixedPrecision.no
    num_workers: int = key(0, ge=0)
    memory_fraction: float = key(0.9, gt=0, le=1)  # frames_per_batch=auto: share of the free memory to fill
    memory_limit_mb: Optional[float] = key(None, gt=0)  # frames_per_batch=auto: a cap in MB instead
    ema: EmaConfig = key(factory=EmaConfig)
    early_stop: EarlyStopConfig = key(factory=EarlyStopConfig)


@dataclass
class LoggerConfig:
    KIND: ClassVar[str] = TRAINING
    kind: LoggerKind = LoggerKind.none
    project: str = "f5tune"


@dataclass
class VocoderConfig:
    KIND: ClassVar[str] = FIXED
    kind: VocoderKind = VocoderKind.vocos
    path: Optional[str] = None
    n_iter: int = key(32, gt=0)


@dataclass
class VocabConfig:
    KIND: ClassVar[str] = FIXED
    # symbols of the data that the model's vocab lacks stop a run unless one of these is chosen
    extend: bool = False  # append them to the vocab and grow the text embedding
    accept_unknown: bool = False  # map them to token 0, as upstream does without a word


@dataclass
class AdapterConfig:
    KIND: ClassVar[str] = MODEL  # the adapter's shape is the model's: a resume refuses a change, as for arch
    kind: AdapterKind = AdapterKind.none
    rank: int = key(16, gt=0)
    alpha: float = key(32.0, gt=0)  # LoRA's output is scaled by alpha / rank
    targets: list[str] = key(factory=lambda: list(LORA_TARGETS), nonempty=True)  # module names (or their ends)
    dropout: float = key(0.0, TRAINING, ge=0, lt=1)  # on the adapter's input while training; nothing at inference


@dataclass
class RunConfig:
    KIND: ClassVar[str] = FIXED
    root: str = key("runs", nonempty=True)  # the folder that holds the run folders
    name: Optional[str] = key(None, nonempty=True)  # None: <model>-<data>-<time>


@dataclass
class FinetuneConfig:
    KIND: ClassVar[str] = FIXED
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = key(factory=OptimConfig)
    train: TrainConfig = key(factory=TrainConfig)
    logger: LoggerConfig = key(factory=LoggerConfig)
    vocoder: VocoderConfig = key(factory=VocoderConfig)
    vocab: VocabConfig = key(factory=VocabConfig)
    adapter: AdapterConfig = key(factory=AdapterConfig)
    run: RunConfig = key(factory=RunConfig)
    pretrained: Optional[str] = None


# ---- kinds ------------------------------------------------------------------------------------------

def _field(schema, name: str):
    return next((f for f in fields(schema) if f.name == name), None)


def kind_of(dotted: str, schema=FinetuneConfig) -> str:
    """The kind of a dotted key ("optim.lr" -> training); a key the schema lacks is fixed."""
    kind = getattr(schema, "KIND", FIXED)
    for part in dotted.split("."):
        f = _field(schema, part) if is_dataclass(schema) else None
        if f is None:
            return FIXED
        section = _section_type(f.type)
        kind = f.metadata.get("kind") or (section.KIND if section is not None else kind)
        schema = section
    return kind


def unseen_keys() -> list[str]:
    """The arch keys that change the model while a checkpoint's tensor shapes cannot show them: only a manifest
    (or an upstream training config) says what a file was trained with."""
    return [f.name for f in fields(ArchConfig) if f.metadata.get("shapes") is False]


def model_keys() -> set[str]:
    """Top-level names that would change the model: inference, where the manifest decides, refuses them."""
    return {"model", "pretrained", "adapter"} | {f.name for f in fields(ModelConfig)}


# ---- checking a config (from the command line, or read back from a file) ----------------------------

def _section_type(t):
    return t if is_dataclass(t) else None


def _optional(t) -> tuple[bool, object]:
    args = typing.get_args(t)
    if typing.get_origin(t) is typing.Union and type(None) in args:
        return True, next(a for a in args if a is not type(None))
    return False, t


def _type_error(value, t) -> Optional[str]:
    if typing.get_origin(t) is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return "must be a mapping of names to values"
        errors = [e for e in (_type_error(v, str) for v in value.values() if isinstance(v, str)) if e]
        return errors[0] if errors else None
    if typing.get_origin(t) is list:
        if not isinstance(value, list):
            return "must be a list"
        errors = [e for e in (_type_error(v, typing.get_args(t)[0]) for v in value) if e]
        return f"each item {errors[0]}" if errors else None
    if isinstance(t, type) and issubclass(t, Enum):
        choices = [e.value for e in t]
        return None if value in choices else f"must be one of {', '.join(choices)}"
    if t is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if t is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"
    if t is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if t is str:
        if not isinstance(value, str):
            return "must be text"
        # values are never resolved: an interpolation read from a file could pull in the environment
        return "holds an interpolation (${...}), which is never resolved here" if "${" in value else None
    return None


def _bound_error(value, meta) -> Optional[str]:
    if meta.get("nonempty") and isinstance(value, (str, list)) and not (value.strip() if isinstance(value, str) else value):
        return "must not be empty"
    for name, ok, word in (("gt", lambda v, b: v > b, "above"), ("ge", lambda v, b: v >= b, "at least"),
                           ("lt", lambda v, b: v < b, "below"), ("le", lambda v, b: v <= b, "at most"),
                           ("ne", lambda v, b: v != b, "other than")):
        if name in meta and isinstance(value, (int, float)) and not ok(value, meta[name]):
            return f"must be {word} {meta[name]}"
    return None


def problems(data, schema, prefix: str = "") -> list[str]:
    """Every way `data` (plain dicts and values) departs from `schema`: unknown or missing keys, types,
    ranges, non-finite floats, interpolations. Empty when it conforms."""
    if not isinstance(data, dict):
        return [f"{prefix.rstrip('.') or 'the config'}: must be a mapping"]
    found = []
    names = {f.name for f in fields(schema)}
    found += [f"{prefix}{k}: not a key of {schema.__name__}" for k in data if k not in names]
    for f in fields(schema):
        where = f"{prefix}{f.name}"
        if f.name not in data:
            if _default(f) is MISSING:  # a key added since the file was written takes its default
                found.append(f"{where}: missing")
            continue
        value = data[f.name]
        optional, t = _optional(f.type)
        if value is None:
            if not optional:
                found.append(f"{where}: must not be null")
            continue
        if is_dataclass(t):
            found += problems(value, t, where + ".")
            continue
        words = f.metadata.get("words", ())
        if value in words:
            continue
        error = (_type_error(value, int if words else t) or _bound_error(value, f.metadata))
        if error and words:
            error += f", or {' or '.join(words)}"
        if error:
            found.append(f"{where}={value!r}: {error}")
    return found


def check(data: dict, schema=FinetuneConfig, source: str = "") -> None:
    """Raise the first problem as a one-line UserError, naming the key (and the file it came from)."""
    found = problems(data, schema)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        unknown = "not a key of" in found[0] or found[0].endswith(": missing")
        raise UserError(f"{source + ': ' if source else ''}{found[0]}{more}", code="config" if unknown else "range")


def _default(f):
    if f.default_factory is not NO_DEFAULT:
        return f.default_factory()
    return MISSING if f.default is NO_DEFAULT else f.default


def complete(data: dict, schema) -> dict:
    """`data` (already checked) with every key it lacks set to the schema's default, as plain values."""
    out = {}
    for f in fields(schema):
        value = data[f.name] if f.name in data else _default(f)
        if is_dataclass(value) or (value is not None and is_dataclass(_optional(f.type)[1])):
            value = complete(value if isinstance(value, dict) else {}, _optional(f.type)[1])
        elif isinstance(value, Enum):
            value = value.value
        out[f.name] = value
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config as {"section.key": value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def from_argv(argv: list[str], schema, command: str) -> dict:
    """A key=value command line read into `schema`'s plain data (`section.key=` for a nested section): each
    value converted by its field's type (text stays text, whatever it looks like; `null` clears an optional
    key), then checked like any config. Every command's key=value line is read here, and its --help printed."""
    if "--help" in argv or "-h" in argv:
        print(help_text(schema, command))
        raise SystemExit(0)
    data = complete({}, schema)
    leaves = sorted(flatten(data))
    for arg in argv:
        name, eq, text = arg.partition("=")
        if not eq:
            raise UserError(f"{arg}: expected key=value ({command})", code="usage")
        *sections, last = name.split(".")
        node, section = data, schema
        for part in sections:
            f = _field(section, part)
            section = _optional(f.type)[1] if f is not None else None
            if not is_dataclass(section):
                break
            node = node[part]
        f = _field(section, last) if is_dataclass(section) else None
        if f is None or is_dataclass(_optional(f.type)[1]):
            raise UserError(f"{name}: not a key of {command}; it takes {', '.join(leaves)}", code="usage")
        optional, t = _optional(f.type)
        if optional and text == "null":
            node[last] = None
            continue
        try:
            if t is bool:
                value = {"true": True, "false": False}[text.lower()]
            elif t in (int, float):
                value = t(text)
            else:
                value = text
        except (KeyError, ValueError):
            raise UserError(f"{arg}: {_type_error(text, t) or 'not a valid value'}", code="range")
        node[last] = value
    found = [p for p in problems(data, schema) if "interpolation" not in p]  # typed text is never resolved
    if found:
        raise UserError(found[0], code="range")
    return data


# ---- what a command offers: one list, derived from its schema -----------------------------------------

def _comments(schema) -> dict[str, str]:
    """Each field's own comment in the schema's source (on its line, or the lines just above it), its bases'
    fields included."""
    found = {}
    for cls in reversed([c for c in schema.__mro__ if is_dataclass(c)]):
        found |= _own_comments(cls)
    return found


@functools.cache  # read from the source file: the app asks for a form's options on every edit
def _own_comments(schema) -> dict[str, str]:
    import inspect
    import io
    import tokenize

    try:
        source = inspect.getsource(schema)
    except (OSError, TypeError):
        return {}
    found, above, line_name = {}, [], {}
    for n, line in enumerate(source.splitlines(), 1):
        m = re.match(r"\s+(\w+)\s*:", line)
        if m:
            line_name[n] = m.group(1)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        n, text = tok.start[0], tok.string.lstrip("#").strip()
        if n in line_name:
            found[line_name[n]] = " ".join(above + [text]) if above and line_name.get(n) not in found else text
            above = []
        elif n + 1 in line_name or (above and n + 1 - len(above) in line_name):
            above.append(text)
    return found


def options(schema, prefix: str = "", kind: str | None = None) -> list[dict]:
    """Every key a command line may set in `schema` (sections as `section.key`), in the schema's order: its
    type, default, kind, bounds, choices and comment. The one list that a command's --help, the web app's forms
    and README's tables of keys come from."""
    rows, comments = [], _comments(schema)
    kind = getattr(schema, "KIND", kind)
    for f in fields(schema):
        optional, t = _optional(f.type)
        own_kind = f.metadata.get("kind") or kind
        if is_dataclass(t):
            rows += options(t, f"{prefix}{f.name}.", own_kind)
            continue
        default = _default(f)
        choices = [e.value for e in t] if isinstance(t, type) and issubclass(t, Enum) else \
            list(f.metadata.get("words", ()))
        rows.append({"key": prefix + f.name, "type": getattr(t, "__name__", str(t)) if not choices else "choice",
                     "default": default.value if isinstance(default, Enum) else default, "optional": optional,
                     "kind": own_kind, "choices": choices, "doc": comments.get(f.name, ""),
                     "bounds": {b: f.metadata[b] for b in ("gt", "ge", "lt", "le", "ne", "nonempty") if b in f.metadata},
                     # for checking a value: its type, the words a number key also takes, and where the field is
                     "value_type": t, "words": tuple(f.metadata.get("words", ())), "schema": schema, "name": f.name})
    return rows


def _shown(value) -> str:
    if value is MISSING:
        return "(required)"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def help_text(schema, command: str) -> str:
    """`command --help`: every key with its default and what it does."""
    lines = [f"usage: {command} key=value ...", ""]
    for o in options(schema):
        what = " | ".join(o["choices"]) if o["choices"] else o["type"]
        lines.append(f"  {o['key']}={_shown(o['default'])}  [{what}]  {o['doc']}".rstrip())
    return "\n".join(lines)


def markdown_table(schema) -> str:
    """README's table of a command's keys."""
    rows = ["| key | default | what it does |", "|---|---|---|"]
    for o in options(schema):
        bar = " \\| "  # a | inside a markdown table cell
        choices = f" ({bar.join(o['choices'])})" if o["choices"] else ""
        doc = o["doc"].replace("|", bar.strip()).replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{o['key']}` | `{_shown(o['default'])}` | {doc}{choices} |")
    return "\n".join(rows)
