"""Synthesise speech with a run's model (or an exported file's): the reference clip's voice, any text.

Long text is cut at sentence ends into pieces that fit one pass of the model (as upstream does: about
22 s of reference plus speech each), spoken one by one with the same seed, and joined with a short
cross-fade. The wav is written atomically, never into a run folder outside its samples/, and never over
a file this tool did not write (unless overwrite=true).
"""
import sys
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from finetune.media.audio import demo_rows, load_audio, write_wav, written_here
from finetune.lock.checkpoints import header
from finetune.lock.errors import UserError
from finetune.lock.files import atomic_write, check_writable
from finetune.lock.load import load_model_file, load_run, pick_device
from finetune.lock.manifest import NAME
from finetune.media.sampling import record
from finetune.media.scores import resolve_ckpt
from finetune.lock.vocab import tokenize
from finetune.media.speak import speak

from .config import Sampling

DEFAULT_TEXT = "This voice was fine-tuned with f5tune, and rebuilt from its manifest."
def check_out(out: Path, overwrite: bool) -> Path:
    """Where a wav may go: a .wav file, outside every run folder but its samples/, replacing only a wav this
    tool wrote unless overwrite=true."""
    if out.is_dir():
        raise UserError(f"out={out} is a folder; give a file name ending in .wav", code="usage")
    if out.suffix.lower() != ".wav":
        raise UserError(f"out={out}: give a file name ending in .wav (the output is a 24 kHz wav)", code="usage")
    resolved = out.resolve()
    for folder in resolved.parents:
        if (folder / NAME).is_file() and not resolved.is_relative_to(folder / "samples"):
            raise UserError(f"out={out} lies inside the run folder {folder}, whose files are the run's; write into "
                            f"{folder / 'samples'} or outside the run", code="usage")
    if out.exists() and not written_here(out) and not overwrite:
        raise UserError(f"out={out} exists and is not a wav this tool wrote; pick another name or pass overwrite=true", code="exists")
    check_writable(out, "out")
    return out


def check_symbols(text: str, tokenizer: str, known: dict, what: str) -> None:
    unknown = sorted({t for t in tokenize(text, tokenizer) if t not in known})
    if unknown:
        listed = ", ".join(repr(s) for s in unknown[:12]) + (f" and {len(unknown) - 12} more" if len(unknown) > 12 else "")
        raise UserError(f"{what}: {len(unknown)} symbols are not in the run's vocab ({listed}); the model would "
                        "speak them as nothing (token 0): remove them, or pass accept_unknown=true", code="vocab")


def vocoder_choice(manifest: dict, cfg: dict) -> dict:
    """The vocoder the run was trained with, unless vocoder= / vocoder_path= say otherwise: kind, path, n_iter."""
    vocoder_cfg = manifest["config"]["vocoder"]
    return {"vocoder": cfg["vocoder"] or vocoder_cfg["kind"],
            "vocoder_path": cfg["vocoder_path"] or vocoder_cfg.get("path"),
            "vocoder_n_iter": vocoder_cfg.get("n_iter", 32)}


def load_run_vocoder(manifest: dict, cfg: dict, device):
    from finetune.media.vocoder import load_vocoder

    chosen = vocoder_choice(manifest, cfg)
    return load_vocoder(chosen["vocoder"], chosen["vocoder_path"], manifest["model"]["mel"], device,
                        chosen["vocoder_n_iter"])


def synthesize(cfg: dict) -> Path:
    if bool(cfg["run"]) == bool(cfg["model_file"]):
        raise UserError("pass one of run=runs/<name> (as printed by python -m finetune) or model_file=<export>.safetensors", code="usage")
    if cfg["gen_text"] is not None and not cfg["gen_text"].strip():
        raise UserError("gen_text is empty; give the text to speak, or leave gen_text out for a default sentence", code="usage")
    if cfg["ref_audio"] and not (cfg["ref_text"] or "").strip():
        raise UserError("ref_text= is required with ref_audio= (the transcript of the reference clip)", code="usage")
    out = check_out(Path(cfg["out"]), cfg["overwrite"]) if cfg["out"] else None
    device = pick_device(cfg["device"])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if cfg["run"]:
        run_dir = Path(cfg["run"])
        which, cfg["weights"] = resolve_ckpt(run_dir, cfg["ckpt"], cfg["weights"])
        model, manifest, ckpt = load_run(run_dir, which, cfg["weights"], device, cfg["allow_foreign"])
        default_ref = run_dir / manifest["reference"]["audio"], manifest["reference"]["text"]
        default_out = run_dir / "samples" / f"{stamp}-{ckpt.stem}-seed{cfg['seed']}.wav"
    else:
        ckpt, cfg["weights"] = Path(cfg["model_file"]), cfg["weights"] or "ema"
        model, manifest = load_model_file(ckpt, cfg["weights"], device)
        default_ref = demo_rows()[0]  # the export carries no audio: use the clip f5-tts ships
        default_out = Path(f"{ckpt.stem}-{stamp}-seed{cfg['seed']}.wav")
    spec = manifest["model"]
    sr = spec["mel"]["target_sample_rate"]
    ref_audio, ref_text = (Path(cfg["ref_audio"]), cfg["ref_text"]) if cfg["ref_audio"] else default_ref
    gen_text = cfg["gen_text"] or DEFAULT_TEXT
    if not cfg["accept_unknown"]:
        for text, what in ((ref_text, "ref_text"), (gen_text, "gen_text")):
            check_symbols(text, spec["tokenizer"], model.vocab_char_map, what)

    wav, n = speak(model, spec, lambda: load_run_vocoder(manifest, cfg, device), load_audio(ref_audio, sr), ref_text,
                   gen_text, cfg, str(ref_audio))

    out = out or check_out(default_out, False)
    # absolute paths: the command inspect prints for this wav works from any folder
    settings = record("inference", run=cfg["run"] and run_dir.absolute(),
                      checkpoint=ckpt.name if cfg["run"] else ckpt.absolute(), update=header(ckpt)[1].get("update"),
                      manifest_sha256=manifest["sha256"], weights=cfg["weights"], ref_audio=ref_audio.absolute(),
                      ref_text=ref_text, gen_text=gen_text,
                      **{f.name: cfg[f.name] for f in fields(Sampling)} | {"device": device}
                      | vocoder_choice(manifest, cfg))
    atomic_write(out, lambda tmp: write_wav(tmp, wav, sr, settings))
    print(f"checkpoint: {ckpt} ({cfg['weights']}), {wav.shape[-1] / sr:.2f} s of audio in {n} "
          f"piece{'s' if n > 1 else ''}", file=sys.stderr)
    return out
