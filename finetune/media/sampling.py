"""How speech is sampled from a CFM model, and the record of it that every synthesised wav carries.

The record is what reproduces a wav: the run (manifest hash), checkpoint and weight set, seed, device, the
arguments of upstream's `CFM.sample`, the vocoder, the texts and reference clip, and the versions. It holds
nothing from the environment.
"""
from ..lock.manifest import versions

FORMAT = "f5tune-synthesis/1"
VERSIONS = ("f5tune", "f5-tts", "torch")


def record(kind: str, *, run, checkpoint, update, manifest_sha256, weights, seed, device, nfe_step, cfg_strength,
           sway_sampling_coef, use_epss, speed, vocoder, vocoder_path, vocoder_n_iter, ref_audio, ref_text,
           gen_text) -> dict:
    """The settings a synthesised wav was made with, as plain JSON values. kind: what the wav is; run: the run
    folder (None for an exported file); checkpoint: its file name (the exported file's path without a run);
    the sampling keys are named as in inference's config (nfe_step is CFM.sample's `steps`), None where a wav
    was not sampled (a reference clip through the vocoder alone)."""
    return {"format": FORMAT, "kind": kind, "run": None if run is None else str(run), "checkpoint": str(checkpoint),
            "update": None if update is None else int(update), "manifest_sha256": manifest_sha256,
            "weights": weights, "seed": seed, "device": str(device), "nfe_step": nfe_step, "cfg_strength": cfg_strength,
            "sway_sampling_coef": sway_sampling_coef, "use_epss": use_epss, "speed": speed,
            "vocoder": str(getattr(vocoder, "value", vocoder)), "vocoder_path": vocoder_path,
            "vocoder_n_iter": vocoder_n_iter, "ref_audio": None if ref_audio is None else str(ref_audio),
            "ref_text": ref_text, "gen_text": gen_text, "versions": versions(VERSIONS)}
