"""What a state dict is, from its keys and shapes alone, and why it does not fit a model."""
import re
from collections import Counter

from .layouts import adapter_keys
from .errors import UserError

DIM_HEAD = 64  # every upstream config uses the backbones' default head size
BLOCKS = {"DiT": "transformer.transformer_blocks.", "UNetT": "transformer.layers.", "MMDiT": "transformer.transformer_blocks."}
FAMILY = {"DiT": "F5-TTS", "UNetT": "E2-TTS", "MMDiT": "MMDiT"}


def dims(desc: str) -> list[int]:
    """"float32[2546, 512]" -> [2546, 512]"""
    return [int(x) for x in re.findall(r"\d+", desc[desc.index("["):])]


def _shape(desc: str) -> str:
    """The shape part of "float32[2546, 512]", as text: cheap to compare for every tensor of a model."""
    return desc[desc.index("["):].replace(" ", "")


def arch_of(shapes: dict) -> dict:
    """Backbone and sizes read off one set's tensor shapes, model keys (None where the file does not say)."""
    s = {k: dims(v) for k, v in shapes.items()}
    keys = list(s)
    if any(k.startswith("transformer.layers.") for k in keys):
        backbone = "UNetT"
    elif any(k.startswith("transformer.transformer_blocks.") for k in keys):
        backbone = "MMDiT" if any("context" in k or "to_k_c" in k for k in keys) else "DiT"
    else:
        return {"backbone": None}
    prefix = BLOCKS[backbone]
    depth = len({k[len(prefix):].split(".")[0] for k in keys if k.startswith(prefix)})
    proj = s.get("transformer.input_embed.proj.weight")
    emb = s.get("transformer.text_embed.text_embed.weight")
    q = next((v for k, v in s.items() if k.startswith(prefix + "0.") and k.endswith("to_q.weight")), None)
    ff = next((v for k, v in s.items() if k.startswith(prefix + "0.") and re.search(r"ff(\.ff)?\.0\.0\.weight$", k)), None)
    dim = proj[0] if proj else None
    return {
        "backbone": backbone,
        "family": FAMILY[backbone],
        "dim": dim,
        "depth": depth,
        "heads": q[0] // DIM_HEAD if q else None,
        "ff_mult": ff[0] // dim if ff and dim else None,
        "text_dim": emb[1] if emb else None,
        "vocab_rows": emb[0] if emb else None,
        "conv_layers": len({k.split(".")[3] for k in keys if k.startswith("transformer.text_embed.text_blocks.")}),
        "mel_dim": (s.get("transformer.proj_out.weight") or [None])[0],
        "proj_in": proj[1] if proj else None,
    }


def lora_rank(shapes: dict) -> int | None:
    """The rank of a LoRA adapter's tensors (rows of its first lora_A), None when it holds none."""
    first = next((v for k, v in shapes.items() if ".lora_A." in k), None)
    return dims(first)[0] if first else None


def describe_adapter_set(shapes: dict) -> str:
    keys = adapter_keys(shapes)
    modules = len({k.split(".lora_")[0] for k in keys if ".lora_" in k})
    return f"a LoRA adapter (rank {lora_rank(shapes)}, {len(keys)} adapter tensors on {modules} modules, no base weights)"


def describe(shapes: dict) -> str:
    if adapter_keys(shapes):
        return describe_adapter_set(shapes)
    a = arch_of(shapes)
    if not a["backbone"]:
        return "not an F5-TTS/E2-TTS model (no transformer blocks)"
    size = ", ".join(f"{k} {a[k]}" for k in ("dim", "depth", "heads", "ff_mult", "text_dim") if a[k] is not None)
    return f"{a['family']} ({a['backbone']}, {size}, {a['vocab_rows']} text rows, {a['proj_in']}-input projection)"


def diagnose(expected: dict, found: dict, target: str = "the run") -> str:
    """One line, in plain words, saying why `found` does not fit `expected` (both model keys)."""
    ea, fa = adapter_keys(expected), adapter_keys(found)
    if fa and not ea:
        return (f"it is an adapter: {describe_adapter_set(found)}, while {target} takes a whole model; an adapter "
                "applies only to its base: use it through its own run, or export it merged (python -m infer export "
                "run=<its run> out=<file>) for a whole model")
    if ea and not fa:
        return (f"it is a whole model, while {target} is an adapter run whose checkpoints hold only "
                f"{describe_adapter_set(expected)}; start a run from a whole model with pretrained=")
    if ea:
        er, fr = lora_rank(expected), lora_rank(found)
        if er != fr:
            return f"it is an adapter of rank {fr}, {target} has adapters of rank {er}"
        return "it is an adapter on other modules or of other shapes than the run's (see adapter.targets)"
    e, f = arch_of(expected), arch_of(found)
    if not f["backbone"]:
        return "it is not an F5-TTS/E2-TTS state dict"
    if e["backbone"] != f["backbone"]:
        return (f"this checkpoint is an {f['family']} model ({f['backbone']}, {f['text_dim']}-d text embedding, "
                f"{f['proj_in']}-input projection); {target} is {e['family']} ({e['backbone']}, {e['text_dim']}-d, {e['proj_in']})")
    size = [k for k in ("dim", "depth", "heads", "ff_mult") if e[k] != f[k]]
    if size:
        fmt = lambda a: ", ".join(f"{k} {a[k]}" for k in ("dim", "depth", "heads", "ff_mult"))  # noqa: E731
        return f"a different size: checkpoint ({fmt(f)}) vs {target} ({fmt(e)}); Base is dim 1024, Small dim 768"
    if e["mel_dim"] != f["mel_dim"]:
        return f"checkpoint predicts {f['mel_dim']} mel channels, the run uses {e['mel_dim']}: different mel settings"
    if e["text_dim"] != f["text_dim"]:
        return f"checkpoint has a {f['text_dim']}-d text embedding, the run {e['text_dim']}-d: a different text_dim"
    if e["conv_layers"] != f["conv_layers"]:
        return f"checkpoint has {f['conv_layers']} text conv layers, the run {e['conv_layers']}: a different conv_layers"
    if e["vocab_rows"] != f["vocab_rows"]:
        more = f["vocab_rows"] > e["vocab_rows"]
        return (f"checkpoint has {f['vocab_rows']} text-embedding rows, the run's vocab gives {e['vocab_rows']}: "
                f"it was trained with {'an extended' if more else 'a smaller'} vocab; use the vocab it was trained with")
    return "tensor names or shapes differ (listed below)"


def misfit(expected: dict, found: dict, limit: int = 10) -> list[str]:
    """Table rows: missing and unexpected keys summarised by prefix, then up to `limit` differing shapes."""
    rows = []
    for label, keys in (("missing", expected.keys() - found.keys()), ("unexpected", found.keys() - expected.keys())):
        if keys:
            by_prefix = Counter(".".join(k.split(".")[:3]) for k in keys)
            summary = ", ".join(f"{p}.* ({n})" for p, n in sorted(by_prefix.items())[:6])
            rows.append(f"  {len(keys)} {label} keys: {summary}{', ...' if len(by_prefix) > 6 else ''}")
    shapes = [f"  {k}: expected {dims(expected[k])}, found {dims(found[k])}"
              for k in sorted(expected.keys() & found.keys()) if _shape(expected[k]) != _shape(found[k])]
    rows += shapes[:limit]
    if len(shapes) > limit:
        rows.append(f"  ... and {len(shapes) - limit} more tensors of other shapes")
    return rows


def check_fits(expected: dict, found: dict, source, target: str) -> None:
    """Refuse, before any weight is loaded, a state dict whose names or shapes differ from the model's."""
    if expected.keys() == found.keys() and all(_shape(v) == _shape(found[k]) for k, v in expected.items()):
        return
    rows = misfit(expected, found)
    if rows:
        raise UserError(
            f"{source} does not fit {target}: {diagnose(expected, found, target)}\n"
            f"  checkpoint: {describe(found)}\n  expected:   {describe(expected)}\n" + "\n".join(rows), code="fit")
