"""LoRA adapters on upstream's modules, through peft: wrap a built base model, name the adapter's tensors,
copy a model for its EMA without copying the frozen base, merge an adapter into its base.

peft wraps upstream's plain torch modules (nn.Linear for the attention and feed-forward projections,
nn.Embedding for the text embedding) by module name, with no model class or config of its own needed.
The model a run trains and inference runs stays upstream's CFM with LoRA layers injected in place; the
adapter's tensors are named as that model names them (`...to_q.lora_A.default.weight`), so one reader,
hash and fingerprint serve adapter checkpoints and whole ones alike.
"""
import copy
import re

from .errors import UserError, first_line
from .layouts import adapter_keys, is_adapter_key

EMBED_MODULE = "text_embed.text_embed"  # the text embedding of every backbone (layouts: transformer.text_embed.text_embed)
TARGET = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def has_adapter(model) -> bool:
    return any(is_adapter_key(n) for n, _ in model.named_parameters())


def adapter_spec(cfg: dict, token_rows: list[int]) -> dict:
    """The manifest's `model.adapter`: what the builder needs to put the same adapter on the same base.
    `token_rows`: text-embedding rows of symbols a vocab extension appended (trained whole)."""
    return {"kind": cfg["kind"], "rank": cfg["rank"], "alpha": cfg["alpha"], "targets": list(cfg["targets"]),
            "tokens": list(token_rows)}


def _lora_config(spec: dict, dropout: float):
    _import_peft()
    from peft import LoraConfig

    tokens = {EMBED_MODULE: list(spec["tokens"])} if spec.get("tokens") else None
    return LoraConfig(r=spec["rank"], lora_alpha=spec["alpha"], target_modules=list(spec["targets"]),
                      lora_dropout=dropout, bias="none", trainable_token_indices=tokens)


def check_targets(model, targets) -> None:
    """Each target must name modules of the model (peft's rule: the whole name, or its last dotted parts)."""
    names = [n for n, _ in model.named_modules() if n]
    for target in targets:
        if not isinstance(target, str) or not TARGET.fullmatch(target):
            raise UserError(f"adapter.targets: {target!r} is not a module name (letters, digits, _ and dots)", code="adapter")
        if not any(n == target or n.endswith("." + target) for n in names):
            first = [re.match(r"transformer\.(transformer_blocks|layers)\.0\.(.+)", n) for n in names]
            block = [m.group(2) for m in first if m and type(model.get_submodule(m.group(0))).__name__ == "Linear"]
            raise UserError(f"adapter.targets: {target!r} names no module of this model; the linear layers of a "
                            f"block are {', '.join(block[:12])}", code="adapter")


def wrap(model, spec: dict, dropout: float = 0.0, seed: int | None = None):
    """peft's PeftModel around `model` (changed in place: LoRA layers injected, every base tensor frozen).
    With `seed`, the adapter's initial weights come from that seed and the global RNG is left as it was."""
    import torch

    if spec.get("kind") != "lora":
        raise UserError(f"adapter kind {spec.get('kind')!r} is not one this tool builds (lora)", code="adapter")
    check_targets(model, spec["targets"])
    _import_peft()
    from peft import get_peft_model

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            wrapped = get_peft_model(model, _lora_config(spec, dropout))
        except (ValueError, TypeError, NotImplementedError) as e:  # peft's refusal of a module type it cannot wrap
            raise UserError(f"adapter.targets={spec['targets']}: peft cannot wrap them ({first_line(e, 200)})", code="adapter")
    inner = wrapped.base_model.model
    trainable = {n for n, p in inner.named_parameters() if p.requires_grad}
    if trainable != set(adapter_keys(n for n, _ in inner.named_parameters())):
        raise UserError("peft left other tensors than the adapter's trainable (a bug of f5tune with this peft "
                        "version; please report it)", code="adapter")
    return wrapped


def with_adapter(model, spec: dict, dropout: float = 0.0, seed: int | None = None):
    """`model` (upstream's CFM) with the adapter injected: still a CFM, the base frozen."""
    return wrap(model, spec, dropout, seed).base_model.model


def adapter_state(state: dict) -> dict:
    return {k: v for k, v in state.items() if is_adapter_key(k)}


def trained_state(model) -> dict:
    """What a checkpoint holds of `model`: the adapter's tensors when it carries one, else every tensor."""
    state = model.state_dict()
    return adapter_state(state) or state


def load_trained(model, state: dict) -> None:
    """Put a checkpoint's tensors (trained_state's keys) back into `model`: strict either way."""
    import torch

    mine = adapter_state(model.state_dict())
    if not mine:
        model.load_state_dict(state, strict=True)
        return
    if mine.keys() != state.keys():
        raise UserError(f"the adapter tensors differ from the model's: {len(mine.keys() - state.keys())} missing, "
                        f"{len(state.keys() - mine.keys())} unexpected", code="adapter")
    with torch.no_grad():
        for k, v in state.items():
            mine[k].copy_(v)


def ema_copy(model):
    """A copy of `model` for its EMA (or a memory probe): trainable tensors copied, frozen ones (a LoRA run's
    base) shared with `model`, so that the copy costs the adapter's size, not the model's."""
    shared = {id(p): p for p in model.parameters() if not p.requires_grad}
    shared |= {id(b): b for b in model.buffers()} if shared else {}
    return copy.deepcopy(model, memo=shared)


def merge_into_base(wrapped):
    """The base with the adapter merged into its weights (peft's merge_and_unload): upstream's plain CFM,
    named as the base is."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wrapped.merge_and_unload()


def describe_adapter(spec: dict) -> str:
    tokens = f", {len(spec['tokens'])} appended text rows trained whole" if spec.get("tokens") else ""
    return f"LoRA rank {spec['rank']}, alpha {spec['alpha']} on {', '.join(spec['targets'])}{tokens}"


def _import_peft() -> None:
    """peft imports bitsandbytes when it is installed, which logs a warning about optional CPU kernels that
    nothing here uses; it would be the only line on stderr of a LoRA inference."""
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import peft  # noqa: F401
