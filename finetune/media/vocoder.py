"""Mel to waveform: Vocos (hub or a local folder, as upstream) or a weights-free Griffin-Lim inversion."""
from pathlib import Path

import torch

from ..lock.errors import UserError, first_line
from ..lock.hub import hub_file
from ..lock.manifest import load_yaml

VOCOS_REPO = "charactr/vocos-mel-24khz"


class GriffinLim:
    """Inverts upstream's vocos-type log-mel: exp, pseudo-inverse of the mel filterbank, Griffin-Lim."""

    def __init__(self, mel: dict, n_iter: int = 32):
        import torchaudio.transforms as AT

        from .audio import mel_filters

        self.inverse_fb = torch.linalg.pinv(mel_filters(mel).T)  # [n_stft, n_mel]
        self.griffin_lim = AT.GriffinLim(n_fft=mel["n_fft"], win_length=mel["win_length"],
                                         hop_length=mel["hop_length"], power=1.0, n_iter=n_iter)

    def decode(self, mel: torch.Tensor) -> torch.Tensor:  # [b, n_mel, frames] -> [b, samples]
        magnitude = (self.inverse_fb.to(mel.device) @ mel.float().exp()).clamp(min=0.0)
        return self.griffin_lim.to(mel.device)(magnitude)


def _vocos_files(path, path_key: str) -> tuple[Path, Path]:
    if path:
        folder = Path(path)
        config, weights = folder / "config.yaml", folder / "pytorch_model.bin"
        for f in (config, weights):
            if not f.is_file():
                raise UserError(f"{f}: not found; {path_key} must be a folder with config.yaml and pytorch_model.bin", code="missing")
        return config, weights
    instead = f"pass {path_key}=<folder with config.yaml and pytorch_model.bin> or vocoder=griffinlim"
    return hub_file(VOCOS_REPO, "config.yaml", instead), hub_file(VOCOS_REPO, "pytorch_model.bin", instead)


# Vocos builds itself from class paths in config.yaml; we accept only the classes its mel-24khz
# model uses and construct them directly, so no file can make us import anything else.
_VOCOS_PARTS = {
    "feature_extractor": "vocos.feature_extractors.MelSpectrogramFeatures",
    "backbone": "vocos.models.VocosBackbone",
    "head": "vocos.heads.ISTFTHead",
}


def _build_vocos(config_path: Path):
    from vocos import Vocos
    from vocos.feature_extractors import MelSpectrogramFeatures
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    classes = {"feature_extractor": MelSpectrogramFeatures, "backbone": VocosBackbone, "head": ISTFTHead}
    config = load_yaml(config_path.read_text(encoding="utf-8", errors="replace"), config_path, "vocos config")
    parts = {}
    for name, expected in _VOCOS_PARTS.items():
        part = config.get(name) if isinstance(config, dict) else None
        part = part if isinstance(part, dict) else {}
        if part.get("class_path") != expected:
            raise UserError(f"{config_path}: {name} must be {expected} (the vocos-mel-24khz layout), "
                            f"found {part.get('class_path')!r}", code="range")
        args = part.get("init_args") or {}
        try:
            if not isinstance(args, dict):
                raise TypeError("init_args is not a mapping")
            parts[name] = classes[name](**args)
        except (TypeError, ValueError) as e:
            raise UserError(f"{config_path}: {name} init_args do not fit {expected} ({e})", code="vocoder")
    return Vocos(**parts)


def load_vocoder(kind: str, path, mel: dict, device, n_iter: int = 32, path_key: str = "vocoder_path"):
    """path_key: the option that sets `path`, named in errors (vocoder_path at inference, vocoder.path in training)."""
    if kind == "griffinlim":
        return GriffinLim(mel, n_iter)
    config, weights = _vocos_files(path, path_key)
    vocoder = _build_vocos(config)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)  # refuses any pickled object
    except Exception as e:  # torch raises several types for junk and for refused pickles
        raise UserError(f"{weights}: not a weights-only torch file ({type(e).__name__}); {path_key} needs vocos's "
                        "pytorch_model.bin", code="vocoder")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{weights}: holds a {type(state).__name__}, not vocos's state dict", code="vocoder")
    try:
        vocoder.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{weights}: does not fit the model {config} describes ({first_line(e, 120)})", code="fit")
    return vocoder.eval().to(device)
