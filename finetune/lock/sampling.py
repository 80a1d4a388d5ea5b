"""How speech is sampled from a CFM model, and the record of it that every synthesised wav carries.

The record is what reproduces a wav: the run (manifest hash), checkpoint and weight set, seed, device, the
arguments of upstream's `CFM.sample`, the vocoder, the texts and reference clip, and the versions. It holds
nothing from the environment.
"""
import ast
import importlib.util
from functools import lru_cache
from importlib import metadata
from pathlib import Path

FORMAT = "f5tune-synthesis/1"
VERSIONS = ("f5tune", "f5-tts", "torch")


@lru_cache(maxsize=None)
def upstream_default(name: str):
    """The default of a keyword argument of the installed upstream `CFM.sample`, read from its source
    (importing f5_tts.model costs seconds that every command line would pay for its config's defaults)."""
    spec = importlib.util.find_spec("f5_tts.model")
    source = Path(next(iter(spec.submodule_search_locations))) / "cfm.py"
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef) and node.name == "sample":
            args = node.args
            named = args.posonlyargs + args.args
            defaults = dict(zip([a.arg for a in named][len(named) - len(args.defaults):], args.defaults))
            defaults |= {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None}
            found = defaults.get(name)
            if found is not None:
                return ast.literal_eval(found)
    raise RuntimeError(f"{source}: CFM.sample has no default for {name}; the installed f5-tts is not one this "
                       "tool supports")


def versions() -> dict:
    found = {}
    for name in VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


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
            "ref_text": ref_text, "gen_text": gen_text, "versions": versions()}
