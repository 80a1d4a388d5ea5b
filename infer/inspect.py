"""python -m infer.inspect PATH: what a run folder, checkpoint or exported file holds, without loading tensors;
or the settings a synthesised wav was made with."""
import json
import shlex
import sys
from pathlib import Path

from finetune.media.audio import wav_settings
from finetune.lock.checkpoints import DamagedFile, binding, file_shapes, header, list_checkpoints, weights_in
from finetune.lock.adapter import describe_adapter
from finetune.lock.layouts import adapter_keys
from finetune.lock.diagnose import arch_of, describe, misfit
from finetune.lock.errors import UserError, user_errors
from finetune.lock.layouts import one_set, parameter_count, weight_sets
from finetune.lock.manifest import parse_manifest, read_manifest

ARCH_KEYS = ("backbone", "family", "dim", "depth", "heads", "ff_mult", "text_dim", "conv_layers", "vocab_rows",
             "mel_dim")


def file_report(path: Path) -> list[str]:
    shapes, meta = file_shapes(path)
    weights = one_set(shapes)
    if adapter_keys(weights):  # its shapes say nothing of the model: the base its manifest names does
        lines = [f"file: {path}", f"holds: {describe(weights)}"]
    else:
        arch = arch_of(weights)
        lines = [f"file: {path}"] + [f"{k}: {arch.get(k)}" for k in ARCH_KEYS]
    lines += [f"parameters: {parameter_count(weights):,}",
              f"weights: {', '.join(weight_sets(shapes, meta))}",
              f"update: {meta.get('update', 'unknown')}"]
    if meta.get("manifest_sha256"):
        lines.append(f"bound to manifest: {meta['manifest_sha256'][:12]} (run {meta.get('run', 'exported')})")
    if meta.get("manifest"):
        try:
            body = parse_manifest(meta["manifest"], f"{path} (embedded manifest)")
            lines.append(f"embedded manifest: {body['model']['name']} ({body['model']['family']}), hash verifies")
        except UserError as e:
            lines.append(f"embedded manifest: DOES NOT verify ({e})")
    return lines


def run_report(run_dir: Path) -> list[str]:
    body = read_manifest(run_dir)  # verified and checked: a forged or damaged manifest stops here
    spec = body["model"]
    adapter = spec.get("adapter")
    model_fp = body["pretrained"]["fingerprint"] if adapter else body["fingerprint"]  # a LoRA run: its base's
    arch = arch_of(model_fp)
    lines = [f"run: {run_dir}",
             f"manifest: verifies (sha256 {body['sha256'][:12]})",
             f"model: {spec['name']} ({spec['family']}, upstream {spec.get('upstream')}), tokenizer {spec['tokenizer']}",
             ] + [f"{k}: {spec['arch'].get(k, arch.get(k))}" for k in ("dim", "depth", "heads", "ff_mult", "text_dim",
                                                                        "conv_layers", "text_mask_padding", "pe_attn_head")]
    lines += [f"vocab: {spec['vocab']['size']} symbols ({arch['vocab_rows']} text rows), sha256 {spec['vocab']['sha256'][:12]}",
              f"parameters: {parameter_count(model_fp):,}",
              f"pretrained: {(body.get('pretrained') or {}).get('source')}",
              f"created: {body['created']} with f5-tts {body['versions'].get('f5-tts')}, torch {body['versions'].get('torch')}",
              f"recommended weights: {body.get('recommended_weights')}"]
    if adapter:
        base = body["pretrained"]
        lines += [f"adapter: {describe_adapter(adapter)}, {parameter_count(body['fingerprint']):,} parameters",
                  f"base: {base.get('path') or base['source']} (sha256 {base['sha256'][:12]}), checked at every load"]
    lines.append("checkpoints:")
    for update, ckpt in list_checkpoints(run_dir).items():
        try:
            shapes, meta = header(ckpt)
        except DamagedFile:
            lines.append(f"  {update}: DAMAGED ({ckpt.name})")
            continue
        fits = "fits" if not misfit(body["fingerprint"], weights_in(shapes, "ema")) else "DOES NOT FIT"
        kinds = "+".join(weight_sets(shapes, meta))
        lines.append(f"  {update}: {binding(meta, body)}, {fits}, {kinds} ({ckpt.name})")
    return lines


def reproduce_args(settings: dict) -> list[str]:
    """python -m infer's arguments that synthesise a wav again from the settings it records (inference's wavs)."""
    from dataclasses import fields

    from .config import Sampling

    args = [f"run={settings['run']}", f"ckpt={settings['update']}"] if settings["run"] else \
        [f"model_file={settings['checkpoint']}"]
    chosen = {"weights": settings["weights"]} | {f.name: settings[f.name] for f in fields(Sampling)} | \
        {k: settings[k] for k in ("ref_audio", "ref_text", "gen_text")}
    return args + [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in chosen.items() if v is not None]


def wav_report(path: Path) -> list[str]:
    settings = wav_settings(path)
    if settings is None:
        raise UserError(f"{path}: holds no synthesis settings; only wavs written by python -m infer, the web app or "
                        "a fine-tune's checkpoint samples (train.log_samples=true) record them", code="usage")
    def shown(v):  # a text with a line break or a tab in JSON's quoting, to keep one key a line
        return json.dumps(v, ensure_ascii=False) if isinstance(v, str) and not v.isprintable() else v

    lines = [f"wav: {path}"] + [f"{k}: {shown(v)}" for k, v in settings.items() if k not in ("format", "versions")]
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in settings["versions"].items()))
    if settings["kind"] in ("inference", "checkpoint sample"):
        missing = [k for k in ("gen_text", "ref_text") if settings[k] is None]
        if missing:
            lines.append(f"reproduce: {' and '.join(missing)} too long to be held in the wav (see its sha256 above); "
                         "pass the same text to python -m infer with the settings above")
        else:
            lines.append(f"reproduce: {shlex.join(['python', '-m', 'infer', *reproduce_args(settings)])}")
    return lines


def main(argv: list[str]) -> None:
    with user_errors():
        if len(argv) != 1:
            raise UserError("usage: python -m infer.inspect PATH (a run folder, checkpoint, exported file or "
                            "synthesised wav)", code="usage")
        path = Path(argv[0])
        if path.is_dir():
            print("\n".join(run_report(path)))
        elif path.is_file() and path.suffix.lower() == ".wav":
            print("\n".join(wav_report(path)))
        elif path.is_file():
            print("\n".join(file_report(path)))
        else:
            raise UserError(f"{path}: no such file or folder", code="missing")


if __name__ == "__main__":
    main(sys.argv[1:])
