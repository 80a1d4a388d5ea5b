"""The run manifest: the one frozen, hashed record that training and inference build the model from.

Read back in three steps, each before anything trusts the content: a size cap and a YAML reader that
refuses anchors and aliases (no alias bomb); the content hash; the schema (types, ranges, file names, no
interpolation), so a forged manifest is refused in one line instead of failing somewhere inside.
"""
import json
import os
import platform
import re
import stat
from importlib import metadata
from pathlib import Path

import yaml

from .adapter import TARGET
from .errors import UserError, first_line
from .files import atomic_write_bytes, sha256_bytes
from .builder import check_recorded, upgrade_spec
from .schema import (ArchConfig, Backbone, CfmConfig, FinetuneConfig, MelConfig, Tokenizer, Weights, complete,
                     problems)

# 2 dropped copies of other fields (text_num_embeds, top-level vocoder, data config); 3 records every constructor
# argument of upstream's backbone, CFM and mel spectrogram, defaults filled in (model.arch, model.cfm, model.mel)
FORMAT = "f5tune-manifest/3"
READABLE = ("f5tune-manifest/1", "f5tune-manifest/2", FORMAT)
NAME = "manifest.yaml"
MAX_BYTES = 1 << 20  # a real manifest is a few kB; anything near this is not one
PACKAGES = ("f5-tts", "torch", "torchaudio", "accelerate", "hydra-core", "omegaconf", "safetensors", "ema-pytorch",
            "peft")
SHA256 = re.compile(r"[0-9a-f]{64}")
TENSOR = re.compile(r"[a-z0-9]+\[[0-9, ]*\]")  # "float32[2546, 512]"


def content_hash(body: dict) -> str:
    """sha256 over canonical JSON of everything but the hash itself (key order and YAML style don't count)."""
    body = {k: v for k, v in body.items() if k != "sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())


# libyaml's parser and emitter where PyYAML has them (its wheels do): on a manifest, 6 times faster than PyYAML's
# own, with the same events and the same text
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    def ignore_aliases(self, data):  # every value written out in full: the reader refuses anchors
        return True


def _load(text: str) -> object:
    """Safe YAML without anchors or aliases (458 bytes of nested aliases expand to gigabytes): its events are
    checked before anything is built from them."""
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.YAMLError("anchors and aliases are not allowed here")
    return yaml.load(text, Loader=_LOADER)


def dump(body: dict) -> str:
    return yaml.dump(body, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def load_yaml(text: str, source, what: str = "manifest") -> object:
    """Safe YAML of at most MAX_BYTES with no anchors or aliases: for any YAML read from a file we were given."""
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise UserError(f"{source}: over {MAX_BYTES >> 10} kB, which no {what} is; restore the original", code="manifest")
    try:
        return _load(text)
    except (yaml.YAMLError, RecursionError) as e:
        raise UserError(f"{source}: not a valid {what} ({first_line(e, 100)}); restore the original", code="manifest")


def write_manifest(run_dir: Path, body: dict) -> dict:
    """Write once: refuses to replace an existing manifest; the file is made read-only."""
    path = Path(run_dir) / NAME
    if path.exists():
        raise UserError(f"{path} already exists; a manifest is never rewritten", code="exists")
    body = seal({"format": FORMAT, **body})
    check_manifest(body, path)
    atomic_write_bytes(path, dump(body).encode("utf-8"))
    os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return body


def seal(body: dict) -> dict:
    """`body` as a reader will load it back, with its content hash (YAML's rendering of floats and tuples
    cannot break the hash)."""
    body = _load(dump({k: v for k, v in body.items() if k != "sha256"}))
    body["sha256"] = content_hash(body)
    return body


def read_manifest(run_dir) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder; pass run=runs/<name> as printed by python -m finetune", code="missing")
    path = run_dir / NAME
    if not path.is_file():
        raise UserError(f"{path}: missing; {run_dir} is not a run folder written by python -m finetune", code="missing")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; restore the manifest from a backup", code="manifest")
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})", code="io")
    return parse_manifest(text, path)


def parse_manifest(text: str, source) -> dict:
    """Load, verify and check a manifest's text (from a run folder or an exported file's metadata); a
    format 1 manifest comes back in format 2's shape."""
    body = load_yaml(text, source)
    fmt = body.get("format") if isinstance(body, dict) else None
    if isinstance(fmt, str) and fmt.startswith("f5tune-manifest/") and fmt not in READABLE:
        raise UserError(f"{source}: format {fmt} was written by a newer f5tune (this one reads up to {FORMAT}); "
                        "upgrade f5tune to use this run", code="manifest")
    if fmt not in READABLE or "sha256" not in body:
        raise UserError(f"{source}: not an {FORMAT} manifest; restore it from a backup", code="manifest")
    actual = content_hash(body)
    if actual != body["sha256"]:
        raise UserError(
            f"{source}: content hash {actual[:12]} does not match recorded {str(body['sha256'])[:12]}; "
            "the manifest was edited after the run wrote it: restore the original (manifests are never edited)"
        , code="manifest")
    check_manifest(body, source)
    body = _current(body)
    check_recorded(body["model"], body["versions"].get("f5-tts"))
    return body


def _current(body: dict) -> dict:
    """Format 3's shape: the config completed with keys added since (their defaults); format 1-2's model
    filled with upstream's arguments; format 1's copies (text_num_embeds, the top-level vocoder, the data
    config inside `data`) dropped."""
    body = {**body, "config": complete(body["config"], FinetuneConfig)}
    if body["format"] != FORMAT:
        body["model"] = upgrade_spec(body["model"])
    if body["format"] == READABLE[0]:
        body["model"] = {k: v for k, v in body["model"].items() if k != "text_num_embeds"}
        body.pop("vocoder", None)
        if body.get("data"):
            body["data"] = {k: body["data"][k] for k in ("path", "sha256", "clips", "hours") if k in body["data"]}
    return body


def _file_name(value) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value


def manifest_problems(body: dict) -> list[str]:
    """What makes `body` unusable as a manifest, however its hash came to match."""
    found = []
    model = body.get("model")
    if not isinstance(model, dict):
        return ["model: missing or not a mapping"]
    for key, ok in (("name", isinstance(model.get("name"), str)),
                    ("backbone", model.get("backbone") in [b.value for b in Backbone]),
                    ("tokenizer", model.get("tokenizer") in [t.value for t in Tokenizer])):
        if not ok:
            found.append(f"model.{key}={model.get(key)!r}: not valid")
    # an arch key the schema lacks is left to check_recorded, which names the f5-tts versions on both sides
    found += [p for p in problems(model.get("arch"), ArchConfig, "model.arch.") if "not a key of" not in p]
    found += problems(model.get("mel"), MelConfig, "model.mel.")
    if body.get("format") == FORMAT:
        found += problems(model.get("cfm"), CfmConfig, "model.cfm.")
    vocab = model.get("vocab")
    if not (isinstance(vocab, dict) and _file_name(vocab.get("file")) and SHA256.fullmatch(str(vocab.get("sha256")))
            and isinstance(vocab.get("size"), int) and not isinstance(vocab.get("size"), bool) and vocab["size"] > 0):
        found.append("model.vocab: needs file (a name inside the run folder), sha256 and size")
    if body.get("format") == READABLE[0] and model.get("text_num_embeds") != (vocab or {}).get("size"):
        found.append("model.text_num_embeds: differs from model.vocab.size")
    if not _fingerprint_ok(body.get("fingerprint")):
        found.append("fingerprint: needs every tensor's name and dtype[shape]")
    reference = body.get("reference")
    if not (isinstance(reference, dict) and _file_name(reference.get("audio")) and isinstance(reference.get("text"), str)):
        found.append("reference: needs audio (a name inside the run folder) and text")
    pretrained = body.get("pretrained")
    if pretrained is not None and not (isinstance(pretrained, dict) and isinstance(pretrained.get("source"), str)
                                       and SHA256.fullmatch(str(pretrained.get("sha256")))):
        found.append("pretrained: needs source and sha256, or null")
    found += adapter_problems(model.get("adapter"), pretrained)
    if body.get("recommended_weights") not in [w.value for w in Weights]:
        found.append(f"recommended_weights={body.get('recommended_weights')!r}: not ema or online")
    if not isinstance(body.get("versions"), dict):
        found.append("versions: not a mapping")
    if body.get("data") is not None and not isinstance(body.get("data"), dict):
        found.append("data: not a mapping")
    found += problems(body.get("config"), FinetuneConfig, "config.")
    return found


def _fingerprint_ok(fp) -> bool:
    return isinstance(fp, dict) and bool(fp) and all(isinstance(k, str) and isinstance(v, str) and TENSOR.fullmatch(v)
                                                     for k, v in fp.items())


def adapter_problems(adapter, pretrained) -> list[str]:
    """A LoRA run's model.adapter and the base it names (pretrained: path or hf:// source, sha256, fingerprint)."""
    if adapter is None:
        return []
    found = []
    if not isinstance(adapter, dict) or adapter.get("kind") != "lora":
        return ["model.adapter: needs kind lora, rank, alpha, targets and tokens"]
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    if not (whole(adapter.get("rank")) and adapter["rank"] > 0):
        found.append(f"model.adapter.rank={adapter.get('rank')!r}: must be a whole number above 0")
    alpha = adapter.get("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < float("inf"):
        found.append(f"model.adapter.alpha={alpha!r}: must be a number above 0")
    targets = adapter.get("targets")
    if not (isinstance(targets, list) and targets and all(isinstance(t, str) and TARGET.fullmatch(t) for t in targets)):
        found.append("model.adapter.targets: needs module names (letters, digits, _ and dots)")
    tokens = adapter.get("tokens")
    if not (isinstance(tokens, list) and all(whole(t) and t > 0 for t in tokens)):
        found.append("model.adapter.tokens: needs a list of text-embedding rows")
    if not (isinstance(pretrained, dict) and _fingerprint_ok(pretrained.get("fingerprint"))
            and (str(pretrained.get("source", "")).startswith("hf://") or isinstance(pretrained.get("path"), str))):
        found.append("pretrained: an adapter run needs its base: source, path, sha256 and fingerprint")
    return found


def check_manifest(body: dict, source) -> None:
    found = manifest_problems(body)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise UserError(f"{source}: {found[0]}{more}; this is not a manifest python -m finetune wrote: restore the original", code="manifest")


def versions(names=PACKAGES) -> dict:
    """Python's version and each named package's (None where it is not installed)."""
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
