"""From a run folder or an exported file to a loaded model: manifest, build, binding, shape check, read."""
import sys
from pathlib import Path

import torch

from .checkpoints import check_binding, header, model_for, pick_checkpoint
from .errors import UserError
from .manifest import parse_manifest, read_manifest, versions
from .vocab import parse_vocab, read_vocab, vocab_bytes

EXPORT_FORMAT = "f5tune-export/1"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device={name}: not a device to run on; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name}: CUDA is not available here; use device=cpu")
    return device


def warn_version_drift(manifest: dict) -> None:
    now, then = versions(), manifest.get("versions", {})
    drift = [f"{name} {then.get(name)} (run) vs {now.get(name)} (installed)"
             for name in ("f5-tts", "torch") if then.get(name) != now.get(name)]
    if drift:
        print(f"warning: version drift: {'; '.join(drift)}", file=sys.stderr)


def load_run(run_dir, ckpt: str = "last", weights: str = "ema", device="cpu", allow_foreign: bool = False):
    """The run's model with the chosen checkpoint loaded: nothing but the run folder is read."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    warn_version_drift(manifest)
    vocab, _ = read_vocab(run_dir / manifest["model"]["vocab"]["file"])
    path = pick_checkpoint(run_dir, ckpt)
    shapes, meta = header(path)  # header only: nothing is loaded until binding and shapes check out
    check_binding(meta, manifest, run_dir, path, allow_foreign)
    model = model_for(manifest, vocab, path, shapes, weights, f"the run {run_dir}")
    return model.to(device).eval(), manifest, path


def read_export(path) -> tuple[dict, list[str], dict]:
    """Manifest (verified), vocab and tensor shapes of an exported file, reading only its header."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model_file={path}: file not found")
    shapes, meta = header(path)
    if meta.get("format") != EXPORT_FORMAT:
        raise UserError(f"model_file={path}: not an f5tune export (no manifest in its metadata); "
                        "export one with python -m infer export run=... out=..., or adopt a foreign file")
    manifest = parse_manifest(meta["manifest"], f"{path} (embedded manifest)")
    vocab = parse_vocab(meta["vocab"].encode("utf-8"), f"{path} (embedded vocab)")
    if vocab_bytes(vocab) != meta["vocab"].encode("utf-8"):
        raise UserError(f"model_file={path}: embedded vocab is malformed")
    return manifest, vocab, shapes


def load_model_file(path, weights: str, device):
    manifest, vocab, shapes = read_export(path)
    warn_version_drift(manifest)
    return model_for(manifest, vocab, Path(path), shapes, weights, f"the manifest inside {path}").to(device).eval(), manifest
