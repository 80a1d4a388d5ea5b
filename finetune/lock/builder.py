"""The one place a model is built: from the `model` section of a manifest, and nothing else."""
import importlib.util
import sys
import types
from contextlib import contextmanager, nullcontext

from .diagnose import FAMILY
from .errors import UserError
from .files import sha256_bytes
from .layouts import tensor_desc
from .schema import Backbone
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
        raise UserError(f"backbone {name!r} is not one of {allowed}")
    return cls


def family(backbone: str, arch: dict) -> str:
    if backbone == "DiT":  # v1 masks text padding and dropped pe_attn_head; v0 did neither
        return "F5-TTS v1" if arch.get("text_mask_padding") else "F5-TTS v0"
    return FAMILY.get(backbone, backbone)


def model_spec(model_cfg: dict, vocab: list[str]) -> dict:
    """The manifest's `model` section, from a resolved model config and the vocab it will use."""
    return {
        "name": model_cfg["name"],
        "upstream": model_cfg.get("upstream"),
        "family": family(model_cfg["backbone"], model_cfg["arch"]),
        "backbone": model_cfg["backbone"],
        "arch": dict(model_cfg["arch"]),
        "mel": dict(model_cfg["mel"]),
        "tokenizer": model_cfg["tokenizer"],
        "vocab": {"file": "vocab.txt", "sha256": sha256_bytes(vocab_bytes(vocab)), "size": len(vocab)},
    }


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
        )
    arch = {k: v for k, v in spec["arch"].items() if v is not None}
    mel = spec["mel"]
    with nullcontext() if init_weights else _no_init():
        transformer = _backbone_class(spec["backbone"])(
            # upstream sizes the text embedding from the vocab: rows = vocab size + 1 (filler token 0)
            **arch, text_num_embeds=spec["vocab"]["size"], mel_dim=mel["n_mel_channels"]
        )
    return CFM(transformer=transformer, mel_spec_kwargs=dict(mel), vocab_char_map={t: i for i, t in enumerate(vocab)})


def fingerprint(state_dict: dict) -> dict:
    """Every tensor's key, dtype and shape: what a checkpoint must match before it is loaded."""
    return {k: tensor_desc(v.dtype, v.shape) for k, v in state_dict.items()}
