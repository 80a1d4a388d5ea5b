"""Adopt a checkpoint that has no manifest: detect its architecture, then write a run folder for it."""
from datetime import datetime, timezone
from pathlib import Path

import torch

from .lock.audio import demo_rows, load_audio, write_wav
from .lock.builder import build_model, fingerprint, model_spec
from .lock.checkpoints import read_upstream, save_checkpoint, weight_keys
from .lock.diagnose import arch_of, check_fits, describe, misfit
from .lock.errors import UserError
from .lock.files import atomic_write, atomic_write_bytes, sha256_file
from .lock.manifest import versions, write_manifest
from .config import CONF_DIR, plain
from .lock.schema import FinetuneConfig
from .lock.vocab import default_vocab_path, read_vocab, vocab_bytes

KEYS = {"ckpt", "vocab", "model", "run.name", "run.root"}


def model_configs(choices) -> dict:
    """Resolved config for each model option, composed exactly as `python -m finetune model=X` would."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return {m: plain(compose(config_name="finetune", overrides=[f"model={m}"]), FinetuneConfig) for m in choices}


def candidates(state_fp: dict, vocab: list[str], configs: dict) -> dict:
    fits = {}
    for name, cfg in configs.items():
        spec = model_spec(cfg["model"], vocab)
        with torch.device("meta"):
            expected = fingerprint(build_model(spec, vocab).state_dict())
        if not misfit(expected, state_fp):
            fits[name] = (cfg, spec, expected)
    return fits


def read_online(path: Path) -> dict | None:
    """The online weights of an upstream trainer .pt, where it kept them."""
    if path.suffix != ".pt":
        return None
    raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    sd = raw.get("model_state_dict") if isinstance(raw, dict) else None
    if not sd:
        return None
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    return {name: sd[k] for name, k in weight_keys(sd, "online").items()}


def adopt(argv: list[str]) -> Path:
    args = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in KEYS:
            raise UserError(f"{arg}: adopt takes {', '.join(sorted(KEYS))} (key=value)")
        args[key] = value
    if "ckpt" not in args:
        raise UserError("adopt needs ckpt=<file.pt|file.safetensors>")
    path = Path(args["ckpt"])
    if not path.is_file():
        raise UserError(f"ckpt={path}: file not found")
    vocab, _ = read_vocab(args.get("vocab") or default_vocab_path())
    ema = read_upstream(path)
    found = fingerprint(ema)
    models = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    if "model" in args and args["model"] not in models:
        raise UserError(f"model={args['model']}: unknown model; choose one of {', '.join(models)}")
    configs = model_configs([args["model"]] if "model" in args else models)

    fits = candidates(found, vocab, configs)
    if "model" in args and not fits:
        cfg = configs[args["model"]]
        with torch.device("meta"):
            expected = fingerprint(build_model(model_spec(cfg["model"], vocab), vocab).state_dict())
        check_fits(expected, found, path, f"model={args['model']}")
    if not fits:
        rows = arch_of(found).get("vocab_rows")
        hint = (f"; its {rows} text rows need a vocab of {rows - 1} symbols: pass vocab=<the vocab.txt it was "
                f"trained with>" if rows and rows != len(vocab) + 1 else "")
        raise UserError(f"{path} fits none of the model configs ({', '.join(models)}): "
                        f"it is {describe(found)}{hint}")
    if len(fits) > 1:
        names = ", ".join(sorted(fits))
        raise UserError(f"{path} fits {names} equally: their tensor shapes are identical (F5TTS_Base and "
                        "F5TTS_v1_Base differ only in text_mask_padding and pe_attn_head, which no weight "
                        f"records), so adopt will not guess; pass model= one of {names}")
    (name, (cfg, spec, expected)), = fits.items()

    run_dir = Path(args.get("run.root", "runs")) / args.get("run.name", f"adopted-{name}-{path.stem}")
    if run_dir.exists():
        raise UserError(f"{run_dir} already exists; pick another run.name=")
    online = read_online(path)
    ref_audio, ref_text = demo_rows()[0]
    sr = spec["mel"]["target_sample_rate"]
    cfg["pretrained"] = str(path)
    pretrained = {"source": str(path), "file": path.name, "sha256": sha256_file(path)}
    body = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "adopted": True,  # no training happened here: the weights are the file's
        "model": spec,
        "vocoder": cfg["vocoder"],
        "pretrained": pretrained,
        "data": None,
        "reference": {"audio": "reference.wav", "text": ref_text},
        "recommended_weights": "ema",
        "config": cfg,
        "versions": versions(),
        "fingerprint": expected,
    }
    run_dir.mkdir(parents=True)
    atomic_write_bytes(run_dir / "vocab.txt", vocab_bytes(vocab))
    wav = load_audio(ref_audio, sr)
    atomic_write(run_dir / "reference.wav", lambda tmp: write_wav(tmp, wav, sr))
    manifest = write_manifest(run_dir, body)
    save_checkpoint(run_dir, 0, online or {}, ema, manifest["sha256"])
    return run_dir
