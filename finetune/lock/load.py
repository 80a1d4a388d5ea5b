"""From a run folder or an exported file to a loaded model: manifest, build, binding, shape check, read.

A LoRA run's checkpoints hold only its adapter: its model is the base the manifest names (rebuilt by the one
builder, its file found where the run found it and verified by sha256), with the adapter applied on top.
"""
import sys
from pathlib import Path

import torch

from .adapter import adapter_state, merge_into_base, wrap
from .builder import build_model, fingerprint
from .checkpoints import (check_binding, check_weights, header, pick_checkpoint, read_into, read_upstream,
                          resolve_pretrained, weights_in)
from .diagnose import check_fits
from .errors import UserError
from .files import sha256_file
from .manifest import parse_manifest, read_manifest, seal, versions
from .vocab import grow_text_embedding, parse_vocab, read_vocab, vocab_bytes

EXPORT_FORMAT = "f5tune-export/1"


def pick_device(name: str, key: str = "device") -> torch.device:
    """The device a `key=` setting names (auto: CUDA where there is one, else the CPU), or a one-line refusal."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{key}={name}: not a device to run on; use auto, cpu, cuda, cuda:N or mps", code="device")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}={name}: CUDA is not available here; use {key}=cpu", code="device")
    return device


def warn_version_drift(manifest: dict) -> None:
    now, then = versions(), manifest.get("versions", {})
    drift = [f"{name} {then.get(name)} (run) vs {now.get(name)} (installed)"
             for name in ("f5-tts", "torch") if then.get(name) != now.get(name)]
    if drift:
        print(f"warning: version drift: {'; '.join(drift)}", file=sys.stderr)


def load_run(run_dir, ckpt: str = "last", weights: str = "ema", device="cpu", allow_foreign: bool = False,
             merge: bool = False):
    """The run's model with the chosen checkpoint loaded: nothing but the run folder (and, for a LoRA run,
    its base) is read. merge=True: a LoRA run's adapter merged into the base (a plain model)."""
    run_dir = Path(run_dir)
    read_manifest(run_dir)  # first: a folder that is no run is named as such, not as one without checkpoints
    path = pick_checkpoint(run_dir, ckpt)
    model, manifest = load_checkpoint(run_dir, path, weights, allow_foreign, merge)
    return model.to(device).eval(), manifest, path


def load_checkpoint(run_dir: Path, path: Path, weights: str, allow_foreign: bool = False, merge: bool = False):
    """(model, manifest) of a run's checkpoint file, on the CPU."""
    manifest = read_manifest(run_dir)
    warn_version_drift(manifest)
    vocab, _ = read_vocab(run_dir / manifest["model"]["vocab"]["file"])
    shapes, meta = header(path)  # header only: nothing is loaded until binding and shapes check out
    check_binding(meta, manifest, run_dir, path, allow_foreign)
    return model_from(manifest, vocab, path, shapes, weights, f"the run {run_dir}", merge), manifest


def build_checked(manifest: dict, vocab: list, target: str, expected: dict | None = None, spec: dict | None = None):
    """The manifest's model (or `spec`, the manifest's with runtime switches amended), uninitialised for a
    checkpoint to fill every tensor, refused unless the installed f5-tts builds exactly the tensors `target`
    recorded (`expected`: the manifest's fingerprint, or its base's)."""
    model = build_model(spec or manifest["model"], vocab, init_weights=False)
    if fingerprint(model.state_dict()) != (expected or manifest["fingerprint"]):
        raise UserError(f"the installed f5-tts builds a different model than {target} recorded "
                        f"(written with f5-tts {manifest['versions'].get('f5-tts')}); install that version", code="upstream")
    return model


def model_for(manifest: dict, vocab: list, path: Path, shapes: dict, weights: str, target: str):
    """Build the manifest's model and load `weights` from the safetensors file at `path` into it."""
    model = build_checked(manifest, vocab, target)
    check_weights(shapes, weights, manifest["fingerprint"], path, target)
    read_into(model, path, weights)
    return model


def model_from(manifest: dict, vocab: list, path: Path, shapes: dict, weights: str, target: str, merge: bool = False):
    """The manifest's model with `weights` of the file at `path` loaded: a whole model, or for a LoRA run the
    base with the file's adapter (merged into it with merge=True)."""
    spec = manifest["model"]
    if not spec.get("adapter"):
        return model_for(manifest, vocab, path, shapes, weights, target)
    check_weights(shapes, weights, manifest["fingerprint"], path, target)  # the adapter's, before the base is read
    wrapped = adapter_model(manifest, vocab, target)
    model = wrapped.base_model.model
    read_into(model, path, weights, adapter_state(model.state_dict(keep_vars=True)))
    return merge_into_base(wrapped) if merge else model


def adapter_model(manifest: dict, vocab: list, target: str, dropout: float = 0.0):
    """A LoRA run's model before its adapter's weights are read (peft's wrapper): the verified base with the
    adapter the manifest records injected, checked against the manifest's fingerprint."""
    wrapped = wrap(base_model(manifest, vocab, target), manifest["model"]["adapter"], dropout)
    if fingerprint(adapter_state(wrapped.base_model.model.state_dict())) != manifest["fingerprint"]:
        raise UserError(f"the installed peft builds a different adapter than {target} recorded (written with peft "
                        f"{manifest['versions'].get('peft')}); install that version", code="upstream")
    return wrapped


# ---- a LoRA run's base --------------------------------------------------------------------------

def base_file(manifest: dict, target: str) -> Path:
    """The base file of a LoRA run, where the run found it (an hf:// source: the hub cache, as at training),
    verified against the sha256 the manifest recorded."""
    p = manifest["pretrained"]
    path = resolve_pretrained(p["source"]) if p["source"].startswith("hf://") else Path(p["path"])
    expected = p["sha256"]
    if not path.is_file():
        raise UserError(f"{target}: its base {path} is missing (pretrained={p['source']}, sha256 {expected}); an "
                        "adapter applies only to the exact base it was trained on: put that file back there", code="missing")
    digest = sha256_file(path)
    if digest != expected:
        raise UserError(f"{target}: the base at {path} has sha256 {digest}, the manifest expects {expected} "
                        f"(pretrained={p['source']}); an adapter applies only to the exact base it was trained on: "
                        f"put that file back at {path}", code="checkpoint")
    return path


def base_state(manifest: dict, path: Path, target: str) -> dict:
    """The base's weights as the run started from them: a file's (EMA where it has them), or a LoRA run's
    checkpoint merged into its own base; text embedding grown by the symbols the run appended."""
    p = manifest["pretrained"]
    if p.get("run"):  # the base is another run's model: a LoRA run's merged, or a full run's weights
        state = load_checkpoint(Path(p["run"]), path, "ema", merge=True)[0].state_dict()
    else:
        state = read_upstream(path)
    added = manifest["model"]["vocab"].get("extended_from", {}).get("added", [])
    if added:
        state = grow_text_embedding(state, len(added), manifest["config"]["train"]["seed"])
    check_fits(p["fingerprint"], fingerprint(state), path, f"the base of {target}")
    return state


def base_model(manifest: dict, vocab: list, target: str):
    """A LoRA run's base: built by the one builder from the manifest, its verified weights loaded."""
    model = build_checked(manifest, vocab, f"the base of {target}", manifest["pretrained"]["fingerprint"])
    path = base_file(manifest, target)
    grown = manifest["model"]["vocab"].get("extended_from")
    if manifest["pretrained"].get("run") or grown or path.suffix != ".safetensors":
        model.load_state_dict(base_state(manifest, path, target), strict=True)
        return model
    shapes, _ = header(path)  # a safetensors file as it is: read straight into the model, no copy beside it
    weights = "ema" if weights_in(shapes, "ema") else "online"
    check_fits(manifest["pretrained"]["fingerprint"], weights_in(shapes, weights), path, f"the base of {target}")
    read_into(model, path, weights)
    return model


def merged_manifest(manifest: dict) -> dict:
    """The manifest of a LoRA run's model merged into its base: a whole model (the base's fingerprint), with
    what was merged recorded; sealed with its own hash."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    model = {k: v for k, v in manifest["model"].items() if k != "adapter"}
    body |= {"model": model, "fingerprint": manifest["pretrained"]["fingerprint"],
             "merged": {"adapter": manifest["model"]["adapter"], "run_manifest_sha256": manifest["sha256"]}}
    return seal(body)


def read_export(path) -> tuple[dict, list[str], dict]:
    """Manifest (verified), vocab and tensor shapes of an exported file, reading only its header."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model_file={path}: file not found", code="missing")
    shapes, meta = header(path)
    if meta.get("format") != EXPORT_FORMAT:
        raise UserError(f"model_file={path}: not an f5tune export (no manifest in its metadata); "
                        "export one with python -m infer export run=... out=..., or adopt a foreign file", code="checkpoint")
    if not all(isinstance(meta.get(k), str) for k in ("manifest", "vocab")):
        raise UserError(f"model_file={path}: its metadata lacks the manifest or the vocab; export it again", code="vocab")
    manifest = parse_manifest(meta["manifest"], f"{path} (embedded manifest)")
    if meta.get("manifest_sha256", manifest["sha256"]) != manifest["sha256"]:
        raise UserError(f"model_file={path}: its metadata names manifest {meta['manifest_sha256'][:12]}, the embedded "
                        f"manifest is {manifest['sha256'][:12]}; the file was edited after export: export it again",
                        code="manifest")
    vocab = parse_vocab(meta["vocab"].encode("utf-8"), f"{path} (embedded vocab)")
    if vocab_bytes(vocab) != meta["vocab"].encode("utf-8"):
        raise UserError(f"model_file={path}: embedded vocab is malformed", code="vocab")
    return manifest, vocab, shapes


def load_model_file(path, weights: str, device):
    """An exported file's model: whole, or an adapter (adapter_only=true) applied to its verified base."""
    manifest, vocab, shapes = read_export(path)
    warn_version_drift(manifest)
    model = model_from(manifest, vocab, Path(path), shapes, weights, f"the manifest inside {path}")
    return model.to(device).eval(), manifest
