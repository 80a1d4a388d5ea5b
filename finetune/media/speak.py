"""Speaking a text in a reference clip's voice: the one sampling path of inference, scoring and the samples a
fine-tune writes at its checkpoints.

Long text is cut at sentence ends into pieces that fit one pass of the model (as upstream does: about 22 s of
reference plus speech each), spoken one by one with the same seed, and joined with a short cross-fade."""
import re

import torch

from ..lock.errors import UserError
from ..lock.vocab import tokenize

TARGET_RMS = 0.1  # upstream's loudness for the reference clip
MIN_REF_SECONDS = 0.5  # under this there is no voice to clone, and the duration rule divides by almost nothing
PASS_SECONDS = 22  # reference + generated speech per pass, as upstream's chunking aims for
CROSS_FADE_SECONDS = 0.15
SENTENCE_END = re.compile(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])")


def pieces(text: str, max_bytes: int) -> list[str]:
    """`text` cut after sentence punctuation into pieces of at most `max_bytes` (UTF-8) where it can be;
    a sentence longer than that stays whole (the caller checks it fits the model)."""
    out, current = [], ""
    for sentence in (s.strip() for s in SENTENCE_END.split(text)):
        if not sentence:
            continue
        joined = f"{current} {sentence}".strip() if current else sentence
        if current and len(joined.encode()) > max_bytes:
            out.append(current)
            joined = sentence
        current = joined
    return out + ([current] if current else [])


def cross_fade(parts: list[torch.Tensor], samples: int) -> torch.Tensor:
    wav = parts[0]
    for part in parts[1:]:
        n = min(samples, wav.shape[-1], part.shape[-1])
        ramp = torch.linspace(0, 1, n)
        wav = torch.cat([wav[:-n], wav[-n:] * (1 - ramp) + part[:n] * ramp, part[n:]]) if n else torch.cat([wav, part])
    return wav


def speak(model, spec: dict, get_vocoder, audio: torch.Tensor, ref_text: str, gen_text: str, cfg: dict,
          where: str) -> tuple[torch.Tensor, int]:
    """`gen_text` in the voice of `audio` (mono, at the model's rate; `ref_text` its transcript, `where` its name
    in errors): (the wav, how many pieces it was spoken in). cfg: seed, nfe_step, cfg_strength,
    sway_sampling_coef, use_epss, speed. `get_vocoder()` gives the vocoder once the text is planned, so that bad input
    is refused before a vocoder is fetched. Writes nothing."""
    sr, hop = spec["mel"]["target_sample_rate"], spec["mel"]["hop_length"]
    device = next(model.parameters()).device
    ref_seconds = audio.shape[-1] / sr
    if ref_seconds < MIN_REF_SECONDS:
        raise UserError(f"{where}: {ref_seconds:.2f} s of reference; give at least {MIN_REF_SECONDS} s "
                        "(3 to 10 s of clean speech clone a voice best)", code="usage")
    rms = audio.square().mean().sqrt().item()
    if rms < TARGET_RMS:
        audio = audio * TARGET_RMS / max(rms, 1e-8)
    if len(ref_text[-1].encode("utf-8")) == 1:
        ref_text = ref_text + " "
    ref_frames = audio.shape[-1] // hop
    ref_bytes = len(ref_text.encode())
    # upstream's rule: as many text bytes per piece as the reference speaks in the time left of a pass
    max_bytes = int(ref_bytes / ref_seconds * (PASS_SECONDS - ref_seconds) * cfg["speed"])
    limit = getattr(model.transformer.text_embed, "precompute_max_pos", None) or 8192
    plan = []
    for piece in pieces(gen_text, max(max_bytes, 1)):
        # upstream's duration rule: the reference's frames per byte of text, applied to the new text
        frames = ref_frames + int(ref_frames / ref_bytes * len(piece.encode()) / cfg["speed"])
        if frames > limit:
            raise UserError(f"gen_text: the piece {piece[:40]!r}... needs {frames} frames at speed={cfg['speed']}; the "
                            f"model takes at most {limit} per pass ({limit * hop / sr:.0f} s with the reference): split "
                            "it with sentence punctuation, or raise speed", code="usage")
        plan.append((piece, frames))

    vocoder, parts = get_vocoder(), []
    with torch.inference_mode():
        for piece, frames in plan:
            generated, _ = model.sample(cond=audio.unsqueeze(0).to(device),
                                        text=[tokenize(ref_text + piece, spec["tokenizer"])], duration=frames,
                                        steps=cfg["nfe_step"], cfg_strength=cfg["cfg_strength"],
                                        sway_sampling_coef=cfg["sway_sampling_coef"], use_epss=cfg["use_epss"],
                                        seed=cfg["seed"])
            parts.append(vocoder.decode(generated[:, ref_frames:, :].permute(0, 2, 1).float())[0].cpu())
    wav = cross_fade(parts, int(CROSS_FADE_SECONDS * sr))
    if rms < TARGET_RMS:
        wav = wav * rms / TARGET_RMS
    return wav, len(plan)
