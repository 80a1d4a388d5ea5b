"""Checkpoint I/O: our safetensors files, upstream's layouts, and the shape check before any load."""
import json
import re
import struct
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .builder import build_model, fingerprint
from .diagnose import check_fits
from .errors import UserError
from .files import atomic_write
from .hub import hub_file

CKPT_DIR = "checkpoints"
WEIGHT_PREFIXES = {"ema": "ema.", "online": "online."}
_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
# buffers that files from before Nov 2024 carry and upstream drops on load
_STALE_BUFFERS = ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window")


# ---- our run checkpoints -------------------------------------------------------------------------

def ckpt_path(run_dir, update: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"model_{update:08d}.safetensors"


def state_path(run_dir, update: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"state_{update:08d}.pt"


def save_checkpoint(run_dir, update: int, online: dict, ema: dict, manifest_sha: str) -> Path:
    """EMA and online weights in one safetensors file, bound to the run by its manifest hash."""
    tensors = {WEIGHT_PREFIXES["ema"] + k: v.detach().contiguous().cpu() for k, v in ema.items()}
    tensors |= {WEIGHT_PREFIXES["online"] + k: v.detach().contiguous().cpu() for k, v in online.items()}
    meta = {"format": "f5tune-ckpt/1", "manifest_sha256": manifest_sha, "run": Path(run_dir).name,
            "update": str(update)}
    path = ckpt_path(run_dir, update)
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def save_train_state(run_dir, update: int, state: dict) -> None:
    """Optimizer, EMA counters, position in the data and each rank's RNG: kept apart from the weights, for resume."""
    state_path(run_dir, update).parent.mkdir(exist_ok=True)
    atomic_write(state_path(run_dir, update), lambda tmp: torch.save(state, tmp))


def list_checkpoints(run_dir) -> dict[int, Path]:
    found = {}
    for p in (Path(run_dir) / CKPT_DIR).glob("model_*.safetensors"):
        m = re.fullmatch(r"model_(\d+)\.safetensors", p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def pick_checkpoint(run_dir, which: str) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"{run_dir}: no checkpoints in {CKPT_DIR}/; the run saved none yet")
    if which == "last":
        return found[max(found)]
    if not str(which).isdigit() or int(which) not in found:
        raise UserError(f"{run_dir}: no checkpoint ckpt={which}; choose last or one of {', '.join(map(str, found))}")
    return found[int(which)]


def _read_header(f) -> tuple[int, dict]:
    """The JSON header's length and content, from a safetensors file open at its start."""
    n = struct.unpack("<Q", f.read(8))[0]
    if n > 100_000_000:
        raise ValueError("header length out of range")
    return n, json.loads(f.read(n))


def header(path) -> tuple[dict, dict]:
    """Key -> "dtype[shape]" and the metadata of a safetensors file, reading only its JSON header.

    Parsed by hand (8-byte length, then JSON) rather than through safe_open: no tensor is touched,
    and it costs well under a millisecond for a full-size model.
    """
    try:
        with open(path, "rb") as f:
            n, raw = _read_header(f)
            f.seek(0, 2)
            size = f.tell()
        meta = raw.pop("__metadata__", None) or {}
        shapes, end = {}, 0
        for k, v in raw.items():
            shapes[k] = f"{_ST_DTYPES.get(v['dtype'], v['dtype'])}{v['shape']}"
            end = max(end, v["data_offsets"][1])
        if 8 + n + end > size:
            raise ValueError(f"truncated: {size} bytes, the header promises {8 + n + end}")
        return shapes, meta
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e}); the file is damaged or not a checkpoint")


def weight_keys(keys, weights: str) -> dict:
    """Model key -> file key for one set of weights (ema or online), in any layout we read.

    Ours: `ema.*` / `online.*`. Otherwise upstream's: `ema_model.*` (EMA only) or bare keys, maybe with
    a `module.` prefix from DDP; EMA counters and the mel buffers of pre-Nov-2024 files are dropped.
    """
    keys = list(keys)
    if any(k.startswith(tuple(WEIGHT_PREFIXES.values())) for k in keys):
        prefix = WEIGHT_PREFIXES[weights]
        return {k[len(prefix):]: k for k in keys if k.startswith(prefix)}
    ema_only = bool(keys) and all(k.startswith("ema_model.") or k in ("initted", "step") for k in keys)
    if weights == "online" and ema_only:
        return {}
    mapping = {}
    for k in keys:
        name = k.removeprefix("module.").removeprefix("ema_model.")
        if k not in ("initted", "step") and name not in _STALE_BUFFERS:
            mapping[name] = k
    return mapping


def weight_sets(keys, meta: dict) -> list[str]:
    """Which weights a file holds: ema and/or online, as far as its layout records it."""
    keys = [k for k in keys if k not in ("initted", "step")]
    if any(k.startswith(tuple(WEIGHT_PREFIXES.values())) for k in keys):
        return [w for w, p in WEIGHT_PREFIXES.items() if any(k.startswith(p) for k in keys)]
    if keys and all(k.startswith("ema_model.") for k in keys):
        return ["ema"]
    return [meta.get("weights") or "one unnamed set"]


def weights_in(shapes: dict, weights: str) -> dict:
    return {name: shapes[k] for name, k in weight_keys(shapes, weights).items()}


def load_weights(path, weights: str) -> dict:
    """One set of weights from a safetensors file, keys as the model names them."""
    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(k) for name, k in weight_keys(f.keys(), weights).items()}


def read_into(model, path, weights: str) -> None:
    """Read one set of weights from a safetensors file straight into the model's own tensors.

    Plain reads into each tensor's memory: no mmap'd pages, no state dict held beside the model, so
    loading costs the model's size and no more (a loaded state dict copied in costs twice that).
    """
    state = {k: v.detach() for k, v in model.state_dict(keep_vars=True).items()}
    with open(path, "rb") as f:
        n, entries = _read_header(f)
        mapping = weight_keys([k for k in entries if k != "__metadata__"], weights)
        if mapping.keys() != state.keys():  # check_fits has said why by now; this guards the memory below
            raise UserError(f"{path}: its {weights} weights do not cover the model's tensors")
        for name, key in sorted(mapping.items(), key=lambda kv: entries[kv[1]]["data_offsets"][0]):
            target, entry = state[name], entries[key]
            start, end = entry["data_offsets"]
            f.seek(8 + n + start)
            dtype = getattr(torch, _ST_DTYPES[entry["dtype"]])
            direct = target.dtype == dtype and target.is_contiguous()
            # another dtype in the file: read it, then convert into place
            data = target.reshape(-1).view(torch.uint8).numpy() if direct else bytearray(end - start)
            if f.readinto(memoryview(data)) != end - start:
                raise UserError(f"{path}: truncated at tensor {key}; the file is damaged")
            if not direct:
                target.copy_(torch.frombuffer(data, dtype=dtype).reshape(entry["shape"]))


# ---- from a manifest and a checkpoint file to a loaded model --------------------------------------

def check_binding(meta: dict, manifest: dict, run_dir: Path, path: Path, allow_foreign: bool) -> None:
    bound = meta.get("manifest_sha256")
    if bound == manifest["sha256"]:
        return
    if bound:
        raise UserError(
            f"{path} belongs to run {meta.get('run', '?')!r} (manifest {bound[:12]}), not to run {run_dir.name!r} "
            f"(manifest {manifest['sha256'][:12]}); use it from its own run folder"
        )
    if not allow_foreign:
        raise UserError(f"{path} carries no run binding, so nothing says it was trained as this run's model; "
                        "pass allow_foreign=true to load it anyway (its shapes are still checked)")


def model_for(manifest: dict, vocab: list, path: Path, shapes: dict, weights: str, target: str):
    """Build the manifest's model and load `weights` from the safetensors file at `path` into it."""
    model = build_model(manifest["model"], vocab, init_weights=False)  # read_into fills every tensor
    if fingerprint(model.state_dict()) != manifest["fingerprint"]:
        raise UserError(f"the installed f5-tts builds a different model than {target} recorded "
                        f"(written with f5-tts {manifest['versions'].get('f5-tts')}); install that version")
    found = weights_in(shapes, weights)
    if not found and weights == "online" and weights_in(shapes, "ema"):
        raise UserError(f"{path} holds only EMA weights (as hub and pruned files do); use weights=ema")
    check_fits(manifest["fingerprint"], found, path, target)
    read_into(model, path, weights)
    return model


# ---- pretrained checkpoints in upstream layouts -----------------------------------------------------

def resolve_pretrained(source: str) -> Path:
    """A local path, or an hf://owner/repo/file URL fetched into the Hugging Face cache."""
    if source.startswith("hf://"):
        parts = source[len("hf://"):].split("/")
        if len(parts) < 3:
            raise UserError(f"pretrained={source}: expected hf://owner/repo/path/to/file")
        return hub_file("/".join(parts[:2]), "/".join(parts[2:]),
                        "download the file elsewhere and pass pretrained=/path/to/file, "
                        "or pretrained=null to train from scratch")
    path = Path(source)
    if not path.is_file():
        raise UserError(f"pretrained={source}: file not found; pass a .pt or .safetensors path, an hf:// URL, or null")
    return path


def read_upstream(path) -> dict:
    """State dict (model keys, EMA weights preferred) from any known layout.

    Layouts: upstream trainer .pt ({model,ema_model,optimizer,...}_state_dict), hub/pruned .pt
    ({ema_model_state_dict}), hub .safetensors (bare ema_model.* keys), or one of our checkpoints.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        header(path)  # a damaged file fails here with a one-line error
        return load_weights(path, "ema")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: cannot read as a weights-only torch checkpoint ({type(e).__name__}); "
                        "pass an upstream .pt or .safetensors file")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: not a state dict")
    sd = raw.get("ema_model_state_dict") or raw.get("model_state_dict") or raw
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    return {name: sd[k] for name, k in weight_keys(sd, "ema").items()}
