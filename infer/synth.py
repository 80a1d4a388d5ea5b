"""Rebuild a run's model from its manifest, check and load a checkpoint, and synthesise speech."""
import sys
from datetime import datetime
from pathlib import Path

import torch

from finetune.lock.audio import demo_rows, load_audio, write_wav
from finetune.lock.errors import UserError
from finetune.lock.load import load_model_file, load_run, pick_device
from finetune.lock.vocab import tokenize

DEFAULT_TEXT = "This voice was fine-tuned with f5tune, and rebuilt from its manifest."
TARGET_RMS = 0.1  # upstream's loudness for the reference clip


def synthesize(cfg: dict) -> Path:
    if bool(cfg["run"]) == bool(cfg["model_file"]):
        raise UserError("pass one of run=runs/<name> (as printed by python -m finetune) or model_file=<export>.safetensors")
    if cfg["speed"] <= 0 or cfg["nfe_step"] < 1:
        raise UserError(f"speed={cfg['speed']} nfe_step={cfg['nfe_step']}: speed must be above 0 (1.0 is the "
                        "reference's pace) and nfe_step 1 or more (32 by default)")
    if cfg["out"] and Path(cfg["out"]).is_dir():
        raise UserError(f"out={cfg['out']} is a folder; give a file name ending in .wav")
    device = pick_device(cfg["device"])
    if cfg["run"]:
        run_dir = Path(cfg["run"])
        model, manifest, ckpt = load_run(run_dir, str(cfg["ckpt"]), cfg["weights"], device, cfg["allow_foreign"])
        default_ref = run_dir / manifest["reference"]["audio"], manifest["reference"]["text"]
        default_out = run_dir / "samples" / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{ckpt.stem}-seed{cfg['seed']}.wav"
    else:
        ckpt = Path(cfg["model_file"])
        model, manifest = load_model_file(ckpt, cfg["weights"], device)
        default_ref = demo_rows()[0]  # the export carries no audio: use the clip f5-tts ships
        default_out = Path(f"{ckpt.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-seed{cfg['seed']}.wav")
    spec, mel = manifest["model"], manifest["model"]["mel"]
    sr, hop = mel["target_sample_rate"], mel["hop_length"]

    if cfg["ref_audio"]:
        if not cfg["ref_text"]:
            raise UserError("ref_text= is required with ref_audio= (the transcript of the reference clip)")
        ref_audio, ref_text = Path(cfg["ref_audio"]), cfg["ref_text"]
    else:
        ref_audio, ref_text = default_ref
    gen_text = cfg["gen_text"] or DEFAULT_TEXT

    audio = load_audio(ref_audio, sr)
    rms = audio.square().mean().sqrt().item()
    if rms < TARGET_RMS:
        audio = audio * TARGET_RMS / max(rms, 1e-8)
    if len(ref_text[-1].encode("utf-8")) == 1:
        ref_text = ref_text + " "
    # upstream's duration rule: the reference's frames per byte of text, applied to the new text
    ref_frames = audio.shape[-1] // hop
    duration = ref_frames + int(ref_frames / len(ref_text.encode()) * len(gen_text.encode()) / cfg["speed"])

    vocoder_cfg = manifest["vocoder"]
    from finetune.lock.vocoder import load_vocoder

    vocoder = load_vocoder(cfg["vocoder"] or vocoder_cfg["kind"], cfg["vocoder_path"] or vocoder_cfg.get("path"),
                           mel, device, vocoder_cfg.get("n_iter", 32))
    with torch.inference_mode():
        out, _ = model.sample(cond=audio.unsqueeze(0).to(device), text=[tokenize(ref_text + gen_text, spec["tokenizer"])],
                              duration=duration, steps=cfg["nfe_step"], cfg_strength=cfg["cfg_strength"],
                              sway_sampling_coef=cfg["sway_sampling_coef"], seed=cfg["seed"])
        generated = out[:, ref_frames:, :].permute(0, 2, 1).float()
        wav = vocoder.decode(generated)[0]
    if rms < TARGET_RMS:
        wav = wav * rms / TARGET_RMS

    out_path = Path(cfg["out"]) if cfg["out"] else default_out
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out_path, wav, sr)
    print(f"checkpoint: {ckpt} ({cfg['weights']}), {wav.shape[-1] / sr:.2f} s of audio", file=sys.stderr)
    return out_path
