"""Run folders: start a new run (validate, write the manifest) or resume one without drift."""
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from .lock.audio import load_audio, write_wav
from .lock.builder import build_model, fingerprint, model_spec
from .lock.checkpoints import (check_binding, header, list_checkpoints, load_weights, model_for, pick_checkpoint,
                          read_upstream, resolve_pretrained, state_path)
from .data import check_frame_budget, load_clips
from .lock.diagnose import check_fits
from .lock.errors import UserError
from .lock.files import atomic_write, atomic_write_bytes, sha256_bytes, sha256_file
from .lock.manifest import read_manifest, versions, write_manifest
from .lock.schema import check_ranges, flatten
from .train import make_accelerator, optimizer_class, train
from .lock.vocab import EMBED, default_vocab_path, grow_text_embedding, read_vocab, settle_vocab, vocab_bytes

AMENDMENTS = "amendments.jsonl"
# Config sections a resume may change: none of them changes the model or its data.
AMENDABLE = ("train.", "optim.", "logger.")
FIXED = ("optim.name",)  # the saved optimizer state only loads into the optimizer that wrote it


# arch keys that change neither tensors nor outputs: a run may start from another with them changed
RUNTIME_ARCH = ("attn_backend", "checkpoint_activations")


def pretrained_run_checkpoint(run_dir: Path, spec: dict, wanted: str) -> Path:
    """pretrained=<run folder>: its last checkpoint, if that run's model is the one asked for."""
    other = read_manifest(run_dir)["model"]
    keys = lambda m: {k: v for k, v in flatten({x: m[x] for x in ("backbone", "arch", "mel", "tokenizer")}).items()  # noqa: E731
                      if k.split(".")[-1] not in RUNTIME_ARCH}
    mine, theirs = keys(spec), keys(other)
    diffs = [f"{k}: {theirs.get(k)} -> {mine.get(k)}" for k in sorted(mine.keys() | theirs.keys())
             if mine.get(k) != theirs.get(k)]
    if diffs:
        raise UserError(f"pretrained={run_dir} is a {other['family']} {other['name']} run; model={wanted} differs "
                        f"({'; '.join(diffs)}); pass model={other['name']} to continue from it")
    return pick_checkpoint(run_dir, "last")


def load_pretrained(model, spec: dict, source: str, wanted: str, grow: int = 0, seed: int = 0) -> dict:
    """Load the pretrained weights, first growing their text embedding by the `grow` symbols appended to the vocab."""
    path = pretrained_run_checkpoint(Path(source), spec, wanted) if Path(source).is_dir() else resolve_pretrained(source)
    sd = read_upstream(path)
    if grow and EMBED in sd:
        sd = grow_text_embedding(sd, grow, seed)
    check_fits(fingerprint(model.state_dict()), fingerprint(sd), path, f"model={wanted}")
    model.load_state_dict(sd, strict=True)
    return {"source": source, "file": path.name, "sha256": sha256_file(path)}


def new_run_dir(cfg: dict) -> Path:
    from accelerate.utils import broadcast_object_list

    name = cfg["run"]["name"] or (
        f"{cfg['model']['name']}-{cfg['data']['name']}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    )
    name = broadcast_object_list([name])[0]  # every rank must agree on the folder rank 0 creates
    if "/" in name or name in (".", ".."):
        raise UserError(f"run.name={name!r}: a run name is a single folder name")
    run_dir = Path(cfg["run"]["root"]) / name
    if run_dir.exists():
        raise UserError(f"{run_dir} already exists; pick another run.name= (a run folder is never reused; "
                        f"continue it with resume={run_dir})")
    return run_dir


def start(cfg: dict) -> Path:
    from accelerate.utils import set_seed

    check_ranges(cfg)
    accelerator = make_accelerator(cfg)
    set_seed(cfg["train"]["seed"])
    # everything that can be wrong is checked before the run folder exists: config, data, vocab, weights
    name = cfg["model"]["name"]
    base_vocab, _ = read_vocab(cfg["model"]["vocab"] or default_vocab_path())
    base_spec = model_spec(cfg["model"], base_vocab)
    clips, data = load_clips(cfg["data"], base_spec)
    hop, sr = base_spec["mel"]["hop_length"], base_spec["mel"]["target_sample_rate"]
    check_frame_budget(clips, cfg["data"], hop / sr)
    optimizer_class(cfg["optim"]["name"])  # a missing bitsandbytes fails here, not after the run folder exists
    vocab, added = settle_vocab(clips, base_vocab, cfg["vocab"], name)
    spec = model_spec(cfg["model"], vocab)
    if added:
        spec["vocab"]["extended_from"] = {**base_spec["vocab"], "added": added}
    model = build_model(spec, vocab)
    pretrained = None
    if cfg["pretrained"]:
        pretrained = load_pretrained(model, spec, cfg["pretrained"], name, len(added), cfg["train"]["seed"])
    samples = sample_writer(cfg, spec["mel"], clips[0], accelerator)
    run_dir = new_run_dir(cfg)
    accelerator.wait_for_everyone()  # no rank may see the folder rank 0 is about to create as "existing"

    reference = data.pop("reference")
    body = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": spec,
        "vocoder": cfg["vocoder"],
        "pretrained": pretrained,
        "data": {**cfg["data"], **data},
        "reference": {"audio": "reference.wav", "text": clips[0].text},
        "recommended_weights": "ema",
        "config": cfg,
        "versions": versions(),
        "fingerprint": fingerprint(model.state_dict()),
    }
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True)
        atomic_write_bytes(run_dir / "vocab.txt", vocab_bytes(vocab))
        wav = load_audio(reference, sr)
        atomic_write(run_dir / "reference.wav", lambda tmp: write_wav(tmp, wav, sr))
        write_manifest(run_dir, body)
    accelerator.wait_for_everyone()
    train(cfg, accelerator, model, clips, run_dir, read_manifest(run_dir), samples=samples)
    return run_dir


def sample_writer(cfg: dict, mel: dict, clip, accelerator):
    if not (cfg["train"]["log_samples"] and accelerator.is_main_process):
        return None
    from .samples import SampleWriter

    return SampleWriter(cfg, mel, clip, accelerator.device)


# ---- resume -----------------------------------------------------------------------------------------

def read_amendments(run_dir: Path, manifest: dict) -> list[dict]:
    """The append-only amendments, each chained to the one before it and the first to the manifest."""
    path = run_dir / AMENDMENTS
    if not path.exists():
        return []
    entries, prev = [], manifest["sha256"]
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entry = json.loads(line)
            body = {k: v for k, v in entry.items() if k != "sha256"}
            ok = entry["prev"] == prev and entry["sha256"] == sha256_bytes(json.dumps(body, sort_keys=True).encode())
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise UserError(f"{path}: line {n} is edited or out of its chain; restore the file (it is append-only)")
        entries.append(entry)
        prev = entry["sha256"]
    return entries


def append_amendment(run_dir: Path, manifest: dict, changes: dict) -> None:
    entries = read_amendments(run_dir, manifest)
    body = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "prev": entries[-1]["sha256"] if entries else manifest["sha256"],
            "manifest_sha256": manifest["sha256"], "changes": changes}
    body["sha256"] = sha256_bytes(json.dumps(body, sort_keys=True).encode())
    with open(run_dir / AMENDMENTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(body, sort_keys=True, ensure_ascii=False) + "\n")


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """cfg with command-line overrides applied: `group=option` replaces a section, `a.b=v` sets a key."""
    from omegaconf import OmegaConf

    from .config import CONF_DIR
    from .lock.schema import SECTIONS, FinetuneConfig

    try:
        merged = OmegaConf.merge(OmegaConf.structured(FinetuneConfig), cfg)
        for arg in overrides:
            key, eq, value = arg.partition("=")
            key = key.lstrip("+")
            if not eq:
                raise UserError(f"{arg}: expected key=value")
            if "." not in key and (CONF_DIR / key).is_dir():
                option = CONF_DIR / key / f"{value}.yaml"
                if not option.is_file():
                    raise UserError(f"{arg}: no such option in conf/{key}/")
                merged[key] = OmegaConf.merge(OmegaConf.structured(SECTIONS[key]), OmegaConf.load(option))
            else:
                merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([f"{key}={value}"]))
        return OmegaConf.to_container(merged, resolve=True, enum_to_str=True)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"config: {str(e).strip().splitlines()[0]}")


def amended_config(cfg: dict, changes: dict) -> dict:
    return apply_overrides(cfg, [f"{k}={json.dumps(new)}" for k, (_, new) in changes.items()])


def latest_intact(run_dir: Path) -> tuple[int, dict, list[int]]:
    """The newest checkpoint whose weights header and training state both read, its state, and the
    newer ones skipped as damaged (each named in a warning)."""
    import torch

    skipped = []
    for update, path in sorted(list_checkpoints(run_dir).items(), reverse=True):
        for f in (path, state_path(run_dir, update)):
            try:
                open(f, "rb").close()
            except FileNotFoundError:
                pass  # a state missing beside its weights: damage, reported below
            except OSError as e:  # unreadable (permissions, disk) is not damage: stop rather than skip it
                raise UserError(f"{f}: cannot be read ({e.strerror}); fix that and resume again")
        try:
            header(path)
            state = torch.load(state_path(run_dir, update), map_location="cpu", weights_only=True)
            return update, state, skipped
        except Exception as e:  # a damaged file: fall back to the one before
            reason = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
            print(f"warning: checkpoint {update} in {run_dir} is damaged ({reason}); trying an older one",
                  file=sys.stderr)
            skipped.append(update)
    raise UserError(f"{run_dir}: no intact checkpoint with its training state to resume from")


def move_aside(run_dir: Path, update: int) -> None:
    """Rename a damaged checkpoint to *.damaged: kept for the user, but no longer the run's `last`
    checkpoint nor counted by keep_last_n (which would otherwise prune intact ones in its place)."""
    for f in (list_checkpoints(run_dir).get(update), state_path(run_dir, update)):
        if f is not None and f.exists():
            f.rename(f.with_name(f.name + ".damaged"))
            print(f"warning: renamed the damaged {f} to {f.name}.damaged (rename it back to retry it)",
                  file=sys.stderr)


def resume(run_dir, overrides: list[str]) -> Path:
    """Continue a run from its newest intact checkpoint; only overrides that leave the model alone pass."""
    from accelerate.utils import set_seed

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    current = manifest["config"]
    for entry in read_amendments(run_dir, manifest):
        current = amended_config(current, entry["changes"])
    new_cfg = apply_overrides(current, overrides)
    old, new = flatten(current), flatten(new_cfg)
    changed = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
    refused = {k: v for k, v in changed.items() if not k.startswith(AMENDABLE) or k in FIXED}
    if refused:
        lines = "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in refused.items())
        raise UserError(f"resume={run_dir} refuses changes to the model or its data: {lines} "
                        "(start a new run for those; train.*, optim.* and logger.* may change)")

    check_ranges(new_cfg)
    accelerator = make_accelerator(new_cfg)
    set_seed(new_cfg["train"]["seed"])
    spec = manifest["model"]
    vocab, _ = read_vocab(run_dir / spec["vocab"]["file"])
    update, state, damaged = latest_intact(run_dir)
    if accelerator.is_main_process:
        for tmp in (run_dir / "checkpoints").glob(".*.tmp-*"):  # halves of writes a crash cut short
            tmp.unlink()
    path = list_checkpoints(run_dir)[update]
    shapes, meta = header(path)
    check_binding(meta, manifest, run_dir, path, allow_foreign=False)
    model = model_for(manifest, vocab, path, shapes, "online", f"the run {run_dir}")
    clips, data = load_clips(new_cfg["data"], spec)
    if data["sha256"] != manifest["data"].get("sha256"):
        raise UserError(f"resume={run_dir}: the dataset at data.path changed since the run started (sha256 "
                        f"{str(manifest['data'].get('sha256'))[:12]} -> {data['sha256'][:12]}); resume needs the "
                        f"same data; for new data start a new run with pretrained={run_dir}")
    samples = sample_writer(new_cfg, spec["mel"], clips[0], accelerator)
    if accelerator.is_main_process:
        for bad in damaged:
            move_aside(run_dir, bad)
        if changed:
            append_amendment(run_dir, manifest, {k: list(v) for k, v in changed.items()})
        print(f"resuming {run_dir} from update {update}" + (f" with {', '.join(changed)}" if changed else ""),
              file=sys.stderr)
    train(new_cfg, accelerator, model, clips, run_dir, manifest, state=state, ema_weights=load_weights(path, "ema"),
          samples=samples)
    return run_dir
