"""Speech quality of a clip as a mean opinion score (1 to 5) predicted by DistillMOS (the distillmos package: a
convolutional transformer distilled from an XLS-R speech-quality model), whose weights ship inside the package
(distillmos/weights/distill_mos_v7.pt): nothing is fetched, so it works offline. The weights are read with
torch.load(weights_only=True), and their sha256 is recorded with every score.

The model hears 16 kHz audio in 7.68 s windows: a shorter clip is padded with silence to one window (as the
package does); a longer one is heard in as many windows as it takes to cover it, evenly spaced, and their
scores averaged (the package itself slides a window every second, 9 windows for a 15 s clip; this costs 2).
The model scales each window to its own peak, so a clip's gain does not change its score.
Used by the preparation (every clip) and by python -m infer.score (the synthesised speech).
"""
import math
from functools import lru_cache

SAMPLE_RATE = 16000
WINDOW = 122880  # samples at 16 kHz the model hears at once (distillmos.sqa.SEQ_LEN)
NAME = "distillmos"
BATCH = 16  # windows per forward pass


def _weights():
    from importlib.util import find_spec
    from pathlib import Path

    spec = find_spec("distillmos")
    if spec is None:
        from ..lock.errors import UserError

        raise UserError("the speech-quality predictor needs the distillmos package (pip install distillmos), or "
                        "turn quality scoring off (quality.model=null)", code="recogniser")
    return Path(spec.submodule_search_locations[0]) / "weights" / "distill_mos_v7.pt"


@lru_cache(maxsize=1)
def identity() -> dict:
    """{"model": "distillmos <version>", "weights_sha256"}: what a score was predicted by."""
    from importlib.metadata import version

    from ..lock.files import sha256_file

    return {"model": f"{NAME} {version('distillmos')}", "weights_sha256": sha256_file(_weights())}


@lru_cache(maxsize=2)
def _model(device: str):
    import warnings

    import torch
    from distillmos import ConvTransformerSQAModel

    model = ConvTransformerSQAModel(load_weights=False, segmenting_in_forward=False)  # the package's own load prints
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch's note on the file; it loads
        model.load_state_dict(torch.load(_weights(), map_location="cpu", weights_only=True)["model"])
    return model.eval().to(device)


def windows(wav):
    """The 16 kHz windows a clip is heard in: [n, WINDOW]."""
    import torch

    n = wav.shape[0]
    if n <= WINDOW:
        return torch.nn.functional.pad(wav, (0, WINDOW - n)).unsqueeze(0)
    k = math.ceil(n / WINDOW)
    return torch.stack([wav[round(i * (n - WINDOW) / (k - 1)):][:WINDOW] for i in range(k)])


def score(wavs: list, sr: int, device: str = "cpu") -> list[float]:
    """The predicted MOS of each mono waveform (1-d tensors or arrays at `sr`)."""
    import torch

    from .audio import resample

    heard = [windows(resample(torch.as_tensor(w, dtype=torch.float32), sr, SAMPLE_RATE)) for w in wavs]
    flat = torch.cat(heard)
    model, out = _model(device), []
    with torch.inference_mode():
        for i in range(0, flat.shape[0], BATCH):
            out.append(model(flat[i:i + BATCH].to(device)).float().cpu().reshape(-1))
    per_window = torch.cat(out).tolist()
    scores, at = [], 0
    for h in heard:
        scores.append(sum(per_window[at:at + h.shape[0]]) / h.shape[0])
        at += h.shape[0]
    return scores
