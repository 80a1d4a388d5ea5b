"""The one place a model is built: from the `model` section of a manifest, and nothing else."""
import importlib.util
import inspect
import sys
import types
from contextlib import contextmanager, nullcontext
from dataclasses import fields

from .diagnose import FAMILY
from .errors import UserError
from .files import sha256_bytes
from .layouts import tensor_desc
from .schema import MODEL, ArchConfig, Backbone, CfmConfig, MelConfig, kind_of
from .upstream import pinned_upstream, upstream_args, upstream_version
from .vocab import vocab_bytes


def without_upstream_trainer() -> None:
    """Let f5_tts.model's submodules import without running its __init__, which imports upstream's
    trainer and with it wandb and datasets: 0.85 s of a 6.7 s cold start here. Inference needs only
    CFM and the backbones, imported by module path (f5_tts.model.cfm, ...), which this leaves working.
    Entry points do it (not library calls, whose process may want upstream's whole package); in a process that already imported f5_tts.model it does nothing."""
    if "f5_tts.model" in sys.modules:
        return
    spec = importlib.util.find_spec("f5_tts.model")
    package = types.ModuleType("f5_tts.model")
    package.__path__, package.__spec__, package.__file__ = list(spec.submodule_search_locations), spec, spec.origin
    sys.modules["f5_tts.model"] = package


def _backbone_class(name: str):
    # imported from the allow-list only; a manifest never names a class path
    if name == Backbone.DiT.value:
        from f5_tts.model.backbones.dit import DiT as cls
    elif name == Backbone.UNetT.value:
        from f5_tts.model.backbones.unett import UNetT as cls
    elif name == Backbone.MMDiT.value:
        from f5_tts.model.backbones.mmdit import MMDiT as cls
    else:
        allowed = ", ".join(b.value for b in Backbone)
        raise UserError(f"backbone {name!r} is not one of {allowed}", code="config")
    return cls


def family(backbone: str, arch: dict) -> str:
    if backbone == "DiT":  # v1 masks text padding and dropped pe_attn_head; v0 did neither
        name = "F5-TTS v1" if arch.get("text_mask_padding") else "F5-TTS v0"
        return name + (" (average upsampling)" if arch.get("text_embedding_average_upsampling") else "")
    return FAMILY.get(backbone, backbone)


# ---- upstream's constructor arguments, read from the installed f5-tts --------------------------------

# what the builder derives rather than records: from the vocab, the mel settings, the backbone built
BACKBONE_DERIVED = ("text_num_embeds", "mel_dim")
CFM_DERIVED = ("transformer", "num_channels", "mel_spec_module", "mel_spec_kwargs", "vocab_char_map")


def _cfm_class():
    from f5_tts.model.cfm import CFM

    return CFM


def _mel_class():
    from f5_tts.model.modules import MelSpec

    return MelSpec


def _sections(backbone: str) -> dict:
    """Manifest section -> (upstream class, the arguments it derives, the schema that lists the rest)."""
    return {"arch": (_backbone_class(backbone), BACKBONE_DERIVED, ArchConfig),
            "cfm": (_cfm_class(), CFM_DERIVED, CfmConfig),
            "mel": (_mel_class(), (), MelConfig)}


def unknown_args() -> list[str]:
    """`Class.argument` for every constructor argument of the installed upstream that the schema does not
    record: each one could change the model without a trace in the manifest."""
    found = []
    for backbone in Backbone:
        for cls, derived, schema in _sections(backbone.value).values():
            known = {f.name for f in fields(schema)} | set(derived)
            found += [f"{cls.__name__}.{a}" for a in upstream_args(cls) if a not in known and f"{cls.__name__}.{a}" not in found]
    return found


def _plain(value):
    return list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, dict) else value


def filled(given: dict, cls, derived, where: str) -> dict:
    """Every argument `cls` takes (but the derived), in its order: the given value, or upstream's default where
    the config leaves it None. A value for an argument `cls` does not take is refused."""
    accepted = {name: d for name, d in upstream_args(cls).items() if name not in derived}
    extra = [k for k, v in given.items() if v is not None and k not in accepted]
    if extra:
        raise UserError(f"{where}.{extra[0]}={given[extra[0]]!r}: {cls.__name__} of the installed f5-tts "
                        f"{upstream_version()} takes no such argument; remove it (or set it to null)", code="config")
    out = {}
    for name, default in accepted.items():
        value = given.get(name)
        if value is None and default is not inspect.Parameter.empty:
            value = default
        out[name] = _plain(value)
    return out


def _complete_args(model_cfg: dict) -> dict:
    """arch, cfm and mel of a model config with every upstream argument filled in."""
    unknown = unknown_args()
    if unknown:
        raise UserError(f"the installed f5-tts {upstream_version()} takes {', '.join(unknown)}, which this f5tune "
                        f"does not record (it is tested with f5-tts {pinned_upstream()}): install that release, "
                        "or an f5tune that records them", code="upstream")
    out = {section: filled(model_cfg.get(section) or {}, cls, derived, f"model.{section}")
           for section, (cls, derived, _) in _sections(model_cfg["backbone"]).items()}
    arch = out["arch"]
    if arch.get("text_embedding_average_upsampling") and not arch.get("text_mask_padding"):
        raise UserError("model.arch.text_embedding_average_upsampling=true needs model.arch.text_mask_padding=true "
                        "(upstream's DiT requires it)", code="config")
    return out


def check_recorded(spec: dict, made_with) -> None:
    """A manifest's model records exactly the arguments the installed upstream takes: one it lacks, or one it
    takes that the manifest does not record, would build another model than the run trained."""
    for section, (cls, derived, _) in _sections(spec["backbone"]).items():
        accepted = {a for a in upstream_args(cls) if a not in derived}
        recorded = set(spec.get(section) or {})
        both = f"the run used f5-tts {made_with}, this is f5-tts {upstream_version()}; install f5-tts=={made_with}"
        for name in sorted(recorded - accepted):
            raise UserError(f"model.{section}.{name}: the manifest records this {cls.__name__} argument, which the "
                            f"installed f5-tts lacks ({both})", code="upstream")
        for name in sorted(accepted - recorded):
            raise UserError(f"model.{section}.{name}: the installed f5-tts's {cls.__name__} takes this argument, which "
                            f"the manifest does not record ({both})", code="upstream")


def model_spec(model_cfg: dict, vocab: list[str]) -> dict:
    """The manifest's `model` section, from a resolved model config and the vocab it will use: every upstream
    constructor argument recorded, defaults filled in."""
    args = _complete_args(model_cfg)
    return {
        "name": model_cfg["name"],
        "upstream": model_cfg.get("upstream"),
        "family": family(model_cfg["backbone"], args["arch"]),
        "backbone": model_cfg["backbone"],
        **args,
        "tokenizer": model_cfg["tokenizer"],
        "vocab": {"file": "vocab.txt", "sha256": sha256_bytes(vocab_bytes(vocab)), "size": len(vocab)},
    }


def upgrade_spec(spec: dict) -> dict:
    """A format 1-2 manifest's model (arch keys left None meant upstream's default; no cfm) as format 3
    records it, filled from the installed upstream, which is what the builder of then passed to it."""
    cfg = {**spec, "arch": {k: v for k, v in spec["arch"].items() if v is not None}}
    return {**spec, **_complete_args(cfg)}


def runtime_spec(spec: dict, cfg: dict) -> dict:
    """`spec` with its arch keys that do not change what the model computes (runtime and training kinds) taken
    from the config a run continues with (amendments included)."""
    arch = dict(spec["arch"])
    for name, value in (cfg["model"].get("arch") or {}).items():
        if name in arch and value is not None and kind_of(f"model.arch.{name}") != MODEL:
            arch[name] = value
    return {**spec, "arch": arch}


@contextmanager
def _no_init():
    """Skip torch.nn.init while building: its random draws cost seconds on a Small or Base model and
    are all overwritten when a checkpoint is read into every tensor (model_for checks that it is)."""
    import torch.nn.init as init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(init, n) for n in names}
    for n in names:
        setattr(init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(init, n, fn)


def build_model(spec: dict, vocab: list[str], init_weights: bool = True):
    """Build the CFM model a manifest describes. Weights are random (or, with init_weights=False,
    uninitialised memory for a checkpoint to fill); checkpoints load on top."""
    from f5_tts.model.cfm import CFM

    digest = sha256_bytes(vocab_bytes(vocab))
    if digest != spec["vocab"]["sha256"] or len(vocab) != spec["vocab"]["size"]:
        raise UserError(
            f"vocab has {len(vocab)} symbols (sha256 {digest[:12]}), the manifest expects "
            f"{spec['vocab']['size']} (sha256 {spec['vocab']['sha256'][:12]}); use the vocab.txt of the run"
        , code="vocab")
    mel = spec["mel"]
    # every recorded argument passed explicitly: none is left to whatever default the installed upstream has
    cfm = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["cfm"].items()}
    with nullcontext() if init_weights else _no_init():
        transformer = _backbone_class(spec["backbone"])(
            # upstream sizes the text embedding from the vocab: rows = vocab size + 1 (filler token 0)
            **spec["arch"], text_num_embeds=spec["vocab"]["size"], mel_dim=mel["n_mel_channels"]
        )
    return CFM(transformer=transformer, **cfm, mel_spec_kwargs=dict(mel),
               vocab_char_map={t: i for i, t in enumerate(vocab)})


def fingerprint(state_dict: dict) -> dict:
    """Every tensor's key, dtype and shape: what a checkpoint must match before it is loaded."""
    return {k: tensor_desc(v.dtype, v.shape) for k, v in state_dict.items()}
