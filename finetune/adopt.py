"""Adopt a checkpoint that has no manifest: detect its architecture, then write a run folder for it."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .config import CONF_DIR, finetune_config
from .media.audio import demo_rows, load_audio
from .lock.builder import build_model, fingerprint, model_spec
from .lock.checkpoints import file_shapes, read_state, read_upstream, save_checkpoint
from .lock.diagnose import arch_of, check_fits, describe, misfit
from .lock.layouts import one_set
from .lock.errors import UserError
from .lock.files import sha256_file
from .lock.schema import RunConfig, from_argv, key, unseen_keys
from .lock.vocab import default_vocab_path, read_vocab
from .runfolder import create_run, manifest_body, pretrained_record, run_path

SIZES = ("dim", "depth", "heads", "ff_mult", "text_dim", "conv_layers")
UPSTREAM_CONFIG = "an upstream training config (the .hydra/config.yaml upstream's train.py leaves beside a run, " \
                  "or one of f5_tts/configs/*.yaml)"


def expected_fingerprint(cfg: dict, vocab: list[str]) -> tuple[dict, dict]:
    spec = model_spec(cfg["model"], vocab)
    with torch.device("meta"):
        return spec, fingerprint(build_model(spec, vocab).state_dict())


def unseen() -> str:
    return ", ".join(unseen_keys())


def sizes_hint(found: dict, configs: dict, specs: dict) -> str:
    """The command that adopts a file of a size no config names: for each family of its backbone, the config
    whose sizes differ least, with the sizes the file has as overrides. Where the backbone has several
    families (F5-TTS v0 and v1), shapes cannot choose: the hint says so and asks for the training config."""
    arch = arch_of(found)
    families = {}
    for m, c in sorted(configs.items()):
        if c["model"]["backbone"] == arch["backbone"]:
            families.setdefault(specs[m]["family"], {})[m] = c
    if not families:
        return ""

    def overrides(cfg):  # a size the config leaves to the backbone (None) is not overridden
        return [f"model.arch.{k}={arch[k]}" for k in SIZES
                if arch.get(k) is not None and cfg["model"]["arch"].get(k) not in (None, arch[k])]

    picks = {f: min(cs.items(), key=lambda mc: (len(overrides(mc[1])), mc[0])) for f, cs in families.items()}
    commands = {f: " ".join([f"model={name}", *overrides(cfg)]) for f, (name, cfg) in picks.items()}
    if len(commands) == 1:
        (name, _), = picks.values()
        return f"; to adopt it anyway as {name} at its own size: {next(iter(commands.values()))}"
    return (f"; its shapes cannot tell {' from '.join(commands)} apart ({unseen()} leave no trace in the weights), so "
            f"adopt will not guess: pass config=<{UPSTREAM_CONFIG}>, or the command of the family it was trained as: "
            + " | ".join(f"{cmd} ({f})" for f, cmd in commands.items()))


def upstream_model_config(path: Path, base: dict) -> dict:
    """`base` (a composed config) with its model section read from an upstream training config: backbone,
    arch, mel_spec and tokenizer. Read as data: no interpolation is resolved, no class path followed."""
    from dataclasses import fields

    from .lock.manifest import load_yaml
    from .lock.schema import ArchConfig, MelConfig, ModelConfig, problems

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"config={path}: cannot be read ({getattr(e, 'strerror', None) or e}); pass {UPSTREAM_CONFIG}", code="io")
    data = load_yaml(text, path, "training config")
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("arch"), dict):
        raise UserError(f"config={path}: no model.arch section; pass {UPSTREAM_CONFIG}", code="adopt")
    for section, schema in (("arch", ArchConfig), ("mel_spec", MelConfig)):
        names = {f.name for f in fields(schema)}
        unknown = [k for k in model.get(section) or {} if k not in names]
        if unknown:
            raise UserError(f"config={path}: model.{section}.{unknown[0]} is not an argument this f5tune records; "
                            "it was written for another f5-tts than the installed one", code="adopt")
    tokenizer = model.get("tokenizer", "pinyin")
    if tokenizer == "custom":  # upstream's custom vocab file with its pinyin text processing
        tokenizer = "pinyin"
    name = str(model.get("name") or path.stem)
    mel = {k: v for k, v in (model.get("mel_spec") or {}).items() if k in {f.name for f in fields(MelConfig)}}
    cfg = {**base["model"], "name": name, "upstream": name, "backbone": model.get("backbone"),
           "arch": model["arch"], "mel": {**base["model"]["mel"], **mel}, "tokenizer": tokenizer, "pretrained": None}
    found = problems(cfg, ModelConfig, "model.")
    if found:
        raise UserError(f"config={path}: {found[0]}", code="adopt")
    return {**base, "model": cfg}


@dataclass
class AdoptConfig:
    ckpt: Optional[str] = None  # the checkpoint to adopt (.pt or .safetensors, any upstream layout)
    vocab: Optional[str] = None  # None: the vocab.txt that f5-tts ships
    model: Optional[str] = None  # a conf/model/ config the file is (model.* overrides change it)
    config: Optional[str] = None  # or the upstream training config it was trained with
    run: RunConfig = key(factory=RunConfig)


COMMAND = "python -m finetune adopt"


def adopt(argv: list[str]) -> Path:
    model_overrides = [a for a in argv if a.startswith("model.")]
    args = from_argv([a for a in argv if not a.startswith("model.")], AdoptConfig, COMMAND)
    if not args["ckpt"]:
        raise UserError("adopt needs ckpt=<file.pt|file.safetensors>", code="usage")
    if model_overrides and not args["model"]:
        raise UserError(f"{model_overrides[0]}: model.* overrides need model=<the config they change>", code="adopt")
    path = Path(args["ckpt"])
    if not path.is_file():
        raise UserError(f"ckpt={path}: file not found", code="missing")
    root = args["run"]["root"]
    if args["run"]["name"]:
        run_path(root, args["run"]["name"])  # a bad or taken name stops before any work
    if args["config"] and (args["model"] or model_overrides):
        raise UserError("config= gives the whole model: leave out model= and model.* overrides", code="adopt")
    vocab, _ = read_vocab(args["vocab"] or default_vocab_path())
    found = one_set(file_shapes(path)[0])  # the header (or the .pt's structure): no tensor is read before a fit
    models = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    if args["model"] and args["model"] not in models:
        raise UserError(f"model={args['model']}: unknown model; choose one of {', '.join(models)}", code="range")
    if args["config"]:
        cfg = upstream_model_config(Path(args["config"]), finetune_config([f"model={models[0]}"]))
        configs = {cfg["model"]["name"]: cfg}
    else:
        names = [args["model"]] if args["model"] else models
        configs = {m: finetune_config([f"model={m}", *model_overrides]) for m in names}

    fits, specs = {}, {}
    for name, cfg in configs.items():
        specs[name], expected = expected_fingerprint(cfg, vocab)
        if not misfit(expected, found):
            fits[name] = (cfg, specs[name], expected)
    if (args["model"] or args["config"]) and not fits:
        check_fits(expected, found, path, f"config={args['config']}" if args["config"] else f"model={args['model']}")
    if not fits:
        rows = arch_of(found).get("vocab_rows")
        hint = (f"; its {rows} text rows need a vocab of {rows - 1} symbols: pass vocab=<the vocab.txt it was "
                f"trained with>" if rows and rows != len(vocab) + 1 else sizes_hint(found, configs, specs))
        raise UserError(f"{path} fits none of the model configs ({', '.join(models)}): it is {describe(found)}{hint}", code="adopt")
    if len(fits) > 1:
        names = ", ".join(sorted(fits))
        raise UserError(f"{path} fits {names} equally: their tensor shapes are identical ({unseen()} leave no trace "
                        f"in the weights), so adopt will not guess; pass config=<{UPSTREAM_CONFIG}>, or model= one "
                        f"of {names}", code="adopt")
    (name, (cfg, spec, expected)), = fits.items()
    run_dir = run_path(root, args["run"]["name"] or f"adopted-{name}-{path.stem}")
    ema = read_upstream(path)
    online = read_state(path, "online") if path.suffix == ".pt" else {}  # a trainer .pt keeps them
    ref_audio, ref_text = demo_rows()[0]
    sr = spec["mel"]["target_sample_rate"]
    cfg["pretrained"] = str(path)
    cfg["run"] = {"root": str(run_dir.parent), "name": run_dir.name}
    pretrained = pretrained_record(str(path), path, sha256_file(path), spec)
    if args["config"]:
        pretrained["config"] = str(args["config"])
    # adopted: no training happened here, the weights are the file's
    body = manifest_body(spec, cfg, pretrained, None, ref_text, expected, adopted=True)
    manifest, lock = create_run(run_dir, body, vocab, load_audio(ref_audio, sr), sr)
    try:
        save_checkpoint(run_dir, 0, online if online.keys() == ema.keys() else {}, ema, manifest["sha256"])
    finally:
        lock.release()
    return run_dir
