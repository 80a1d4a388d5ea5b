"""Key conventions of every checkpoint layout this tool reads, in one place.

Ours: `ema.<key>` and `online.<key>`. Upstream's: `ema_model.<key>` plus the EMA counters `initted`/`step`
(hub .safetensors, and the EMA part of its .pt files), bare keys (online weights), a `module.` prefix from
DDP, and two mel buffers in files from before Nov 2024, which upstream drops on load.
"""
OURS = {"ema": "ema.", "online": "online."}
EMA_COUNTERS = ("initted", "step")
STALE_BUFFERS = ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window")
BUFFER_SUFFIXES = ("rotary_embed.inv_freq",)  # tensors of a state dict that are not parameters


# what peft names an adapter's own tensors: LoRA's two factors, and the rows of the text embedding that
# a vocab extension appends (peft's trainable tokens), which train whole
ADAPTER_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".trainable_tokens_delta.")


def is_adapter_key(key: str) -> bool:
    return any(m in key for m in ADAPTER_MARKERS)


def adapter_keys(keys) -> list[str]:
    return [k for k in keys if is_adapter_key(k)]


def tensor_desc(dtype, shape) -> str:
    """"float32[2546, 512]": how fingerprints, headers and diagnoses write a tensor."""
    return f"{str(dtype).removeprefix('torch.')}{list(shape)}"


def model_key(key: str) -> str:
    """A file key as the model names it: every layout's prefixes removed."""
    return key.removeprefix("module.").removeprefix("ema_model.")


def is_ours(keys) -> bool:
    return any(k.startswith(tuple(OURS.values())) for k in keys)


def ema_only(keys) -> bool:
    """Upstream's EMA-only files (hub, pruned): every key is `ema_model.*` or an EMA counter."""
    keys = list(keys)
    return bool(keys) and all(k.startswith("ema_model.") or k in EMA_COUNTERS for k in keys)


def weight_keys(keys, weights: str) -> dict:
    """Model key -> file key for one set of weights (ema or online), in any layout; {} when the file
    lacks that set. A file of upstream's with one unnamed set gives it for either."""
    keys = list(keys)
    if is_ours(keys):
        prefix = OURS[weights]
        picked = [k for k in keys if k.startswith(prefix)]
        strip = len(prefix)
    elif weights == "online" and ema_only(keys):
        return {}
    else:
        picked, strip = keys, 0
    mapping = {}
    for k in picked:
        name = model_key(k[strip:])
        if k[strip:] not in EMA_COUNTERS and name not in STALE_BUFFERS:
            mapping[name] = k
    return mapping


def weight_sets(keys, meta: dict) -> list[str]:
    """Which weights a file holds: ema and/or online, as far as its layout records it."""
    keys = [k for k in keys if k not in EMA_COUNTERS]
    if is_ours(keys):
        return [w for w, p in OURS.items() if any(k.startswith(p) for k in keys)]
    if ema_only(keys):
        return ["ema"]
    return [meta.get("weights") or "one unnamed set"]


def one_set(shapes: dict) -> dict:
    """The EMA set of a file's shapes, or its only set: what diagnoses and descriptions look at."""
    return {name: shapes[k] for name, k in (weight_keys(shapes, "ema") or weight_keys(shapes, "online")).items()}


def parameter_count(shapes: dict) -> int:
    """Parameters (not buffers) of a set of shapes written as dtype[shape]."""
    import math
    import re

    return sum(math.prod(int(d) for d in re.findall(r"\d+", desc[desc.index("["):]))
               for k, desc in shapes.items() if not k.endswith(BUFFER_SUFFIXES))
