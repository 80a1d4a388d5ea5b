"""The run manifest: the one frozen, hashed record that training and inference build the model from."""
import json
import os
import platform
import stat
from importlib import metadata
from pathlib import Path

import yaml

from .errors import UserError
from .files import atomic_write_bytes, sha256_bytes

FORMAT = "f5tune-manifest/1"
NAME = "manifest.yaml"
PACKAGES = ("f5-tts", "torch", "torchaudio", "accelerate", "hydra-core", "omegaconf", "safetensors", "ema-pytorch")


def content_hash(body: dict) -> str:
    """sha256 over canonical JSON of everything but the hash itself (key order and YAML style don't count)."""
    body = {k: v for k, v in body.items() if k != "sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # write every value out in full: no &id001 anchors for readers
        return True


def dump(body: dict) -> str:
    return yaml.dump(body, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def write_manifest(run_dir: Path, body: dict) -> dict:
    """Write once: refuses to replace an existing manifest; the file is made read-only."""
    path = Path(run_dir) / NAME
    if path.exists():
        raise UserError(f"{path} already exists; a manifest is never rewritten")
    body = {"format": FORMAT, **body}
    # hash what a reader will load back, so YAML's rendering of floats and tuples cannot break it
    body = yaml.safe_load(dump(body))
    body["sha256"] = content_hash(body)
    atomic_write_bytes(path, dump(body).encode("utf-8"))
    os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return body


def read_manifest(run_dir) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder; pass run=runs/<name> as printed by python -m finetune")
    path = run_dir / NAME
    if not path.is_file():
        raise UserError(f"{path}: missing; {run_dir} is not a run folder written by python -m finetune")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; restore the manifest from a backup")
    return parse_manifest(text, path)


def parse_manifest(text: str, source) -> dict:
    """Load and verify a manifest's text (from a run folder or an exported file's metadata)."""
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{source}: not valid YAML ({type(e).__name__}); restore the manifest from a backup")
    if not isinstance(body, dict) or body.get("format") != FORMAT or "sha256" not in body:
        raise UserError(f"{source}: not an {FORMAT} manifest; restore it from a backup")
    actual = content_hash(body)
    if actual != body["sha256"]:
        raise UserError(
            f"{source}: content hash {actual[:12]} does not match recorded {str(body['sha256'])[:12]}; "
            "the manifest was edited after the run wrote it: restore the original (manifests are never edited)"
        )
    return body


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
