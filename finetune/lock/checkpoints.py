"""Checkpoint I/O: our safetensors files and upstream's layouts (one reader), binding, and the checks before a load.

Our files carry, in their safetensors metadata, the manifest hash that binds them to their run and a
sha256 of each weight set's tensors, verified while the tensors are read (resume, pretrained=, export,
adopt, inference): a flipped bit fails loudly instead of loading.
"""
import hashlib
import json
import re
import struct
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .diagnose import check_fits
from .errors import UserError, first_line
from .files import atomic_write
from .hub import hub_file
from .layouts import EMA_COUNTERS, OURS, tensor_desc, weight_keys

CKPT_DIR = "checkpoints"
FORMAT = "f5tune-ckpt/2"  # 2 added the tensor hashes (<set>_sha256); /1 files load without that check
_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class DamagedFile(UserError):
    """A file that is truncated, unparsable or fails its recorded hash: damage, not a reason to stop a resume."""
    code = "damaged"


# ---- our run checkpoints -------------------------------------------------------------------------

def ckpt_path(run_dir, update: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"model_{update:08d}.safetensors"


def state_path(run_dir, update: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"state_{update:08d}.pt"


class _Digest:
    """sha256 over each tensor's bytes, combined by name: independent of the order tensors are read in."""

    def __init__(self):
        self.parts = {}

    def add(self, name: str, data) -> None:
        self.parts[name] = hashlib.sha256(data).hexdigest()

    def hexdigest(self) -> str:
        return hashlib.sha256(json.dumps(self.parts, sort_keys=True).encode()).hexdigest()


def _raw(t: torch.Tensor):
    return t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()


def tensors_hash(state: dict) -> str:
    digest = _Digest()
    for name, t in state.items():
        digest.add(name, _raw(t))
    return digest.hexdigest()


def save_checkpoint(run_dir, update: int, online: dict, ema: dict, manifest_sha: str, extra: dict | None = None) -> Path:
    """EMA and online weights in one safetensors file, bound to the run by its manifest hash; `extra`: more
    metadata (validation losses)."""
    sets = {"ema": ema, "online": online}
    tensors = {OURS[w] + k: v.detach().contiguous().cpu() for w, sd in sets.items() for k, v in sd.items()}
    meta = {"format": FORMAT, "manifest_sha256": manifest_sha, "run": Path(run_dir).name, "update": str(update)}
    meta |= {f"{w}_sha256": tensors_hash(sd) for w, sd in sets.items() if sd} | {k: str(v) for k, v in (extra or {}).items()}
    path = ckpt_path(run_dir, update)
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def save_train_state(run_dir, update: int, state: dict) -> None:
    """Optimizer, EMA counters, position in the data and each rank's RNG: kept apart from the weights, for resume."""
    state_path(run_dir, update).parent.mkdir(exist_ok=True)
    atomic_write(state_path(run_dir, update), lambda tmp: torch.save(state, tmp))


def load_train_state(path: Path) -> dict:
    """A training state, or DamagedFile when it is missing or cut short. A file that is whole but will not
    load (another torch's format, an unpickling refusal) stops the resume instead: it is not damage."""
    if not path.is_file():
        raise DamagedFile(f"{path.name} is missing beside its weights")
    try:
        with zipfile.ZipFile(path) as z:  # torch.save writes a zip: truncation breaks its directory or CRCs
            bad = z.testzip()
    except zipfile.BadZipFile as e:
        raise DamagedFile(f"{path.name} is cut short or corrupt ({e})")
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror}); fix that and resume again", code="io")
    if bad is not None:
        raise DamagedFile(f"{path.name} is corrupt (member {bad} fails its CRC)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's loader raises plain exceptions of several types
        raise UserError(f"{path}: a whole file that torch {torch.__version__} will not load "
                        f"({type(e).__name__}: {first_line(e, 120)}); resume with the torch the run used", code="checkpoint")


def list_checkpoints(run_dir) -> dict[int, Path]:
    found = {}
    for p in (Path(run_dir) / CKPT_DIR).glob("model_*.safetensors"):
        m = re.fullmatch(r"model_(\d+)\.safetensors", p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def pick_checkpoints(run_dir, which) -> dict[int, Path]:
    """The checkpoints `ckpt=` names: `last`, an update, or `all` and comma-separated updates; {update: path},
    oldest first. The one reading of ckpt= for inference, export, scoring and the app (`best` is a scored
    row: media/scores.resolve_ckpt turns it into an update first)."""
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"{run_dir}: no checkpoints in {CKPT_DIR}/; the run saved none yet", code="checkpoint")
    which = str(which or "last")
    if which == "all":
        return found
    if which == "last":
        return {max(found): found[max(found)]}
    wanted = [w.strip() for w in which.split(",")]
    bad = [w for w in wanted if not w.isdigit() or int(w) not in found]
    if bad:
        raise UserError(f"{run_dir}: no checkpoint ckpt={bad[0]}; choose last or one of "
                        f"{', '.join(map(str, found))}", code="checkpoint")
    return {int(w): found[int(w)] for w in sorted(set(wanted), key=int)}


def pick_checkpoint(run_dir, which) -> Path:
    picked = pick_checkpoints(run_dir, which)
    if len(picked) != 1:
        raise UserError(f"ckpt={which}: give one checkpoint here (last or an update)", code="usage")
    return next(iter(picked.values()))


def _read_header(f) -> tuple[int, dict]:
    """The JSON header's length and content, from a safetensors file open at its start."""
    n = struct.unpack("<Q", f.read(8))[0]
    if n > 100_000_000:
        raise ValueError("header length out of range")
    raw = json.loads(f.read(n))
    if not isinstance(raw, dict):
        raise ValueError("header is not a mapping")
    return n, raw


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
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})", code="io")
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise DamagedFile(f"{path}: not a readable safetensors file ({e}); the file is damaged or not a checkpoint")
    try:
        meta = raw.pop("__metadata__", None) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise ValueError("metadata values must be text")
        shapes, end = {}, 0
        for k, v in raw.items():
            shapes[k] = f"{_ST_DTYPES.get(v['dtype'], v['dtype'])}{list(v['shape'])}"
            end = max(end, v["data_offsets"][1])
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise DamagedFile(f"{path}: malformed safetensors header ({e}); the file is damaged or not a checkpoint")
    if 8 + n + end > size:
        raise DamagedFile(f"{path}: truncated: {size} bytes, the header promises {8 + n + end}; the file is damaged")
    return shapes, meta


def weights_in(shapes: dict, weights: str) -> dict:
    return {name: shapes[k] for name, k in weight_keys(shapes, weights).items()}


def _check_hash(path, meta: dict, weights: str, digest: _Digest) -> None:
    recorded = meta.get(f"{weights}_sha256")
    if recorded and digest.hexdigest() != recorded:
        raise DamagedFile(f"{path}: its {weights} weights do not match the sha256 recorded when the file was written "
                          "(a flipped bit or an edit); use another checkpoint, or restore this one from a backup")


def load_weights(path, weights: str) -> dict:
    """One set of weights from a safetensors file, keys as the model names them, checked against its hash."""
    _, meta = header(path)
    digest, out = _Digest(), {}
    with safe_open(str(path), framework="pt") as f:
        for name, k in weight_keys(f.keys(), weights).items():
            out[name] = f.get_tensor(k)
            digest.add(name, _raw(out[name]))
    _check_hash(path, meta, weights, digest)
    return out


def read_into(model, path, weights: str, state: dict | None = None) -> None:
    """Read one set of weights from a safetensors file straight into the model's own tensors, hashing
    them on the way (no second read); `state`: the model's tensors the file holds, when not all of them
    (a LoRA run's adapter).

    Plain reads into each tensor's memory: no mmap'd pages, no state dict held beside the model, so
    loading costs the model's size and no more (a loaded state dict copied in costs twice that).
    """
    state = {k: v.detach() for k, v in (state if state is not None else model.state_dict(keep_vars=True)).items()}
    digest = _Digest()
    with open(path, "rb") as f:
        n, entries = _read_header(f)
        meta = entries.get("__metadata__") or {}
        mapping = weight_keys([k for k in entries if k != "__metadata__"], weights)
        if mapping.keys() != state.keys():  # check_fits has said why by now; this guards the memory below
            raise UserError(f"{path}: its {weights} weights do not cover the model's tensors", code="fit")
        for name, key in sorted(mapping.items(), key=lambda kv: entries[kv[1]]["data_offsets"][0]):
            target, entry = state[name], entries[key]
            start, end = entry["data_offsets"]
            f.seek(8 + n + start)
            dtype = getattr(torch, _ST_DTYPES[entry["dtype"]])
            direct = target.dtype == dtype and target.is_contiguous()
            # another dtype in the file: read it, then convert into place
            data = target.reshape(-1).view(torch.uint8).numpy() if direct else bytearray(end - start)
            if f.readinto(memoryview(data)) != end - start:
                raise DamagedFile(f"{path}: truncated at tensor {key}; the file is damaged")
            digest.add(name, data)
            if not direct:
                target.copy_(torch.frombuffer(data, dtype=dtype).reshape(entry["shape"]))
    _check_hash(path, meta, weights, digest)


# ---- from a manifest and a checkpoint file to a loaded model --------------------------------------

def binding(meta: dict, manifest: dict) -> str:
    """How a checkpoint (its metadata) stands to a run, in the words inspect, the errors and the app all use:
    `bound` (to this run's manifest), `belongs to run '<name>'` (another's) or `unbound` (none: placed by hand)."""
    bound = meta.get("manifest_sha256")
    if bound == manifest["sha256"]:
        return "bound"
    return f"belongs to run {meta.get('run', '?')!r}" if bound else "unbound"


def binding_error(meta: dict, manifest: dict, run_dir: Path, path: Path, strict: bool = False) -> str | None:
    """Why a checkpoint does not belong to this run: it is bound to another run, or (strict) to none. None when
    it is bound to this run, or unbound and not strict."""
    words = binding(meta, manifest)
    if words == "bound" or (words == "unbound" and not strict):
        return None
    if words == "unbound":
        return f"{path} is unbound (it carries no run binding), so nothing says it was trained as this run's model"
    return (f"{path} {words} (manifest {meta['manifest_sha256'][:12]}), not to run {run_dir.name!r} "
            f"(manifest {manifest['sha256'][:12]})")


def check_binding(meta: dict, manifest: dict, run_dir: Path, path: Path, allow_foreign: bool) -> None:
    error = binding_error(meta, manifest, run_dir, path, strict=not allow_foreign)
    if error:
        fix = "use it from its own run folder" if meta.get("manifest_sha256") else \
            "pass allow_foreign=true to load it anyway (its shapes are still checked)"
        raise UserError(f"{error}; {fix}", code="binding")


def check_weights(shapes: dict, weights: str, expected: dict, path, target: str) -> None:
    """The file holds the `weights` set, of the shapes `expected` (a fingerprint), or says why not."""
    found = weights_in(shapes, weights)
    if not found and weights == "online" and weights_in(shapes, "ema"):
        raise UserError(f"{path} holds only EMA weights (as hub and pruned files do); use weights=ema", code="checkpoint")
    check_fits(expected, found, path, target)


# ---- files of any layout: ours, upstream's trainer and hub files, pruned files --------------------

def resolve_pretrained(source: str) -> Path:
    """A local path, or an hf://owner/repo/file URL fetched into the Hugging Face cache."""
    if source.startswith("hf://"):
        parts = source[len("hf://"):].split("/")
        if len(parts) < 3:
            raise UserError(f"pretrained={source}: expected hf://owner/repo/path/to/file", code="checkpoint")
        return hub_file("/".join(parts[:2]), "/".join(parts[2:]),
                        "download the file elsewhere and pass pretrained=/path/to/file, "
                        "or pretrained=null to train from scratch")
    path = Path(source)
    if not path.is_file():
        raise UserError(f"pretrained={source}: file not found; pass a .pt or .safetensors path, an hf:// URL, or null", code="missing")
    return path


def _pt_tensors(path: Path) -> tuple[dict, dict]:
    """A torch .pt checkpoint's tensors under our layout's keys (online./ema. where its groups say which),
    and its update count. mmap: nothing is read until a tensor is used."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # weights_only refuses any pickled object; torch raises several types for junk
        raise UserError(f"{path}: cannot read as a weights-only torch checkpoint ({type(e).__name__}); "
                        "pass an upstream .pt or .safetensors file", code="checkpoint")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: holds a {type(raw).__name__}, not a state dict; pass an upstream .pt or "
                        ".safetensors checkpoint", code="checkpoint")
    meta = {"update": str(raw["update"] if "update" in raw else raw["step"])} \
        if isinstance(raw.get("update", raw.get("step")), int) else {}
    groups = {"online": raw.get("model_state_dict"), "ema": raw.get("ema_model_state_dict")}
    if any(isinstance(g, dict) for g in groups.values()):
        tensors = {OURS[w] + k: v for w, g in groups.items() if isinstance(g, dict)
                   for k, v in g.items() if isinstance(v, torch.Tensor)}
    else:
        tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    return tensors, meta


def file_shapes(path) -> tuple[dict, dict]:
    """Shapes (file keys) and metadata of a checkpoint of any layout, without reading tensor data."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return header(path)
    tensors, meta = _pt_tensors(path)
    return {k: tensor_desc(v.dtype, v.shape) for k, v in tensors.items()}, meta


def read_state(path, weights: str = "ema") -> dict:
    """One set of weights (model keys) from a checkpoint of any layout; {} when the file lacks that set.
    Our files are checked against their recorded hash."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_weights(path, weights)
    tensors, _ = _pt_tensors(path)
    return {name: tensors[k] for name, k in weight_keys(tensors, weights).items()}


def read_upstream(path) -> dict:
    """One whole model of a file: EMA where the file has them, else its online set."""
    return read_state(path, "ema") or read_state(path, "online")


def ema_counters(path) -> dict:
    """The EMA counters (step, initted) a file of upstream's layout keeps beside its EMA weights; {} when it has
    none. Upstream's Trainer continues them when it fine-tunes from the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        shapes, _ = header(path)
        names = [k for k in EMA_COUNTERS if k in shapes]
        if not names:
            return {}
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in names}
    tensors, _ = _pt_tensors(path)
    for prefix in (OURS["ema"], ""):  # an ema_model_state_dict group, or a bare EMA state dict
        if all(prefix + k in tensors for k in EMA_COUNTERS):
            return {k: tensors[prefix + k] for k in EMA_COUNTERS}
    return {}
