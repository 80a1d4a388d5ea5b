"""Adopt a checkpoint that has no manifest: detect its architecture, then write a run folder for it."""
from pathlib import Path

import torch

from .config import CONF_DIR, finetune_config
from .lock.audio import demo_rows, load_audio
from .lock.builder import build_model, fingerprint, model_spec
from .lock.checkpoints import read_state, read_upstream, save_checkpoint
from .lock.diagnose import arch_of, check_fits, describe, misfit
from .lock.errors import UserError
from .lock.files import sha256_file
from .lock.manifest import versions
from .lock.vocab import default_vocab_path, read_vocab
from .runfolder import create_run, now, run_path

KEYS = {"ckpt", "vocab", "model", "run.name", "run.root"}
SIZES = ("dim", "depth", "heads", "ff_mult", "text_dim", "conv_layers")


def expected_fingerprint(cfg: dict, vocab: list[str]) -> tuple[dict, dict]:
    spec = model_spec(cfg["model"], vocab)
    with torch.device("meta"):
        return spec, fingerprint(build_model(spec, vocab).state_dict())


def sizes_hint(found: dict, configs: dict) -> str:
    """The command that adopts a file of a size no config names: the config of its family whose sizes
    differ least, with the sizes the file has as overrides."""
    arch = arch_of(found)
    same_family = {m: c for m, c in configs.items() if c["model"]["backbone"] == arch["backbone"]}
    if not same_family:
        return ""

    def overrides(cfg):  # a size the config leaves to the backbone (None) is not overridden
        return [f"model.arch.{k}={arch[k]}" for k in SIZES
                if arch.get(k) is not None and cfg["model"]["arch"].get(k) not in (None, arch[k])]

    name, cfg = min(same_family.items(), key=lambda mc: (len(overrides(mc[1])), mc[0]))
    return f"; to adopt it anyway as {name} at its own size: model={name} {' '.join(overrides(cfg))}"


def adopt(argv: list[str]) -> Path:
    args, model_overrides = {}, []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key.startswith("model."):
            model_overrides.append(arg)
            continue
        if not eq or key not in KEYS:
            raise UserError(f"{arg}: adopt takes {', '.join(sorted(KEYS))} and model.* overrides (key=value)")
        args[key] = value
    if "ckpt" not in args:
        raise UserError("adopt needs ckpt=<file.pt|file.safetensors>")
    if model_overrides and "model" not in args:
        raise UserError(f"{model_overrides[0]}: model.* overrides need model=<the config they change>")
    path = Path(args["ckpt"])
    if not path.is_file():
        raise UserError(f"ckpt={path}: file not found")
    root = args.get("run.root", "runs")
    if "run.name" in args:
        run_path(root, args["run.name"])  # a bad or taken name stops before any work
    vocab, _ = read_vocab(args.get("vocab") or default_vocab_path())
    ema = read_upstream(path)
    found = fingerprint(ema)
    models = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    if "model" in args and args["model"] not in models:
        raise UserError(f"model={args['model']}: unknown model; choose one of {', '.join(models)}")
    names = [args["model"]] if "model" in args else models
    configs = {m: finetune_config([f"model={m}", *model_overrides]) for m in names}

    fits = {}
    for name, cfg in configs.items():
        spec, expected = expected_fingerprint(cfg, vocab)
        if not misfit(expected, found):
            fits[name] = (cfg, spec, expected)
    if "model" in args and not fits:
        check_fits(expected, found, path, f"model={args['model']}")
    if not fits:
        rows = arch_of(found).get("vocab_rows")
        hint = (f"; its {rows} text rows need a vocab of {rows - 1} symbols: pass vocab=<the vocab.txt it was "
                f"trained with>" if rows and rows != len(vocab) + 1 else sizes_hint(found, configs))
        raise UserError(f"{path} fits none of the model configs ({', '.join(models)}): it is {describe(found)}{hint}")
    if len(fits) > 1:
        names = ", ".join(sorted(fits))
        raise UserError(f"{path} fits {names} equally: their tensor shapes are identical (F5TTS_Base and "
                        "F5TTS_v1_Base differ only in text_mask_padding and pe_attn_head, which no weight "
                        f"records), so adopt will not guess; pass model= one of {names}")
    (name, (cfg, spec, expected)), = fits.items()
    run_dir = run_path(root, args.get("run.name", f"adopted-{name}-{path.stem}"))
    online = read_state(path, "online") if path.suffix == ".pt" else {}  # a trainer .pt keeps them
    ref_audio, ref_text = demo_rows()[0]
    sr = spec["mel"]["target_sample_rate"]
    cfg["pretrained"] = str(path)
    cfg["run"] = {"root": str(run_dir.parent), "name": run_dir.name}
    body = {
        "created": now(),
        "adopted": True,  # no training happened here: the weights are the file's
        "model": spec,
        "pretrained": {"source": str(path), "file": path.name, "sha256": sha256_file(path)},
        "data": None,
        "reference": {"audio": "reference.wav", "text": ref_text},
        "recommended_weights": "ema",
        "config": cfg,
        "versions": versions(),
        "fingerprint": expected,
    }
    manifest, lock = create_run(run_dir, body, vocab, load_audio(ref_audio, sr), sr)
    try:
        save_checkpoint(run_dir, 0, online if online.keys() == ema.keys() else {}, ema, manifest["sha256"])
    finally:
        lock.release()
    return run_dir
