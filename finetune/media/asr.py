"""Models that transformers loads for listening to audio: Whisper for transcripts (preparation and scoring) and a
speaker-verification model for speaker similarity (scoring).

A model is a local folder (config.json, preprocessor files and *.safetensors) or a hub id, fetched once into
the hub cache; offline with neither, one line naming the key. Only safetensors weights are loaded (nothing
is unpickled), and no remote code runs. A model's identity is its weights' sha256 and a hash of its other
files: where it lies does not matter.
"""
import json
import re
from pathlib import Path

from ..lock.errors import UserError, first_line
from ..lock.files import sha256_bytes, sha256_file

FETCHED = ["*.json", "*.safetensors", "*.txt", "*.tiktoken"]  # config, tokenizer, weights: no pickles
WHISPER = ("a Whisper model (config.json, tokenizer files, *.safetensors) or a hub id such as "
           "openai/whisper-large-v3-turbo")
SAMPLE_RATE = 16000  # what Whisper's and WavLM's feature extractors expect


def model_folder(model: str, key: str = "asr.model", what: str = WHISPER,
                 example: str = "/path/to/local/whisper") -> tuple[Path, dict]:
    """The local folder of `model` (the value of `key`; `what`: which model it should be, `example`: a local
    folder's path, for errors) and what identifies it: {"model", "revision", "weights_sha256", "files_sha256"}."""
    model = model.strip()
    local = Path(model).expanduser()
    if local.is_dir():
        folder, label, revision = local.resolve(), str(local.resolve()), None
    elif model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UserError(f"{key}={model}: no such folder; give a folder holding {what}", code="missing")
    else:
        folder, label = _fetch(model, key, example), model
        revision = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    weights = sorted(folder.glob("*.safetensors"))
    if not (folder / "config.json").is_file() or not weights:
        raise UserError(f"{key}={model}: {folder} lacks config.json or *.safetensors weights; "
                        f"save the model with save_pretrained (safetensors), or set {key}={example}", code="recogniser")
    shas = {p.name: sha256_file(p) for p in weights}
    weights_sha = shas[weights[0].name] if len(shas) == 1 else sha256_bytes(json.dumps(shas, sort_keys=True).encode())
    others = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.suffix in (".json", ".txt", ".tiktoken")}
    return folder, {"model": label, "revision": revision, "weights_sha256": weights_sha,
                    "files_sha256": sha256_bytes(json.dumps(others, sort_keys=True).encode())}


def _fetch(repo_id: str, key: str, example: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=FETCHED))
    except Exception as e:
        fix = f"set {key}={example} (a folder saved with save_pretrained)"
        if constants.HF_HUB_OFFLINE:
            raise UserError(f"{key}={repo_id}: not in the local hub cache and HF_HUB_OFFLINE is set; {fix}, "
                            "or fetch it once with the hub reachable", code="offline")
        reason = first_line(e)
        raise UserError(f"{key}={repo_id}: cannot download it ({reason[:120]}); {fix}", code="offline")


def _quiet_transformers():
    import transformers

    transformers.utils.logging.set_verbosity_error()  # its deprecation chatter is not the user's to act on
    transformers.utils.logging.disable_progress_bar()


def _cannot_load(key: str, model: str, folder: Path, e: Exception) -> UserError:
    reason = first_line(e)
    return UserError(f"{key}={model}: cannot load it from {folder} ({reason[:160]})", code="recogniser")


def recogniser(folder: Path, model: str, device: str, key: str = "asr.model"):
    """transformers' automatic-speech-recognition pipeline on the model in `folder` (`model`: as the user named
    it); fp16 on GPUs that compute it well, as upstream does."""
    import torch
    from transformers import pipeline

    _quiet_transformers()
    half = device.startswith("cuda") and torch.cuda.get_device_properties(device).major >= 7
    try:
        return pipeline("automatic-speech-recognition", model=str(folder), device=device,
                        dtype=torch.float16 if half else torch.float32,
                        model_kwargs={"use_safetensors": True}, trust_remote_code=False)
    except Exception as e:
        raise _cannot_load(key, model, folder, e)


def check_language(language, key: str = "asr.language") -> None:
    if language is None:
        return
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    if language.lower() not in LANGUAGES and language.lower() not in TO_LANGUAGE_CODE:
        raise UserError(f"{key}={language}: not a Whisper language; use a code such as en, de, zh or a name "
                        "such as english, or null to detect it per clip", code="recogniser")


def generate_kwargs(pipe, language, model: str, key: str = "asr") -> dict:
    """What Whisper's generate needs to transcribe in `language` (None: detected per clip)."""
    if getattr(pipe.model.generation_config, "is_multilingual", False):
        return {"task": "transcribe"} | ({"language": language} if language else {})
    if language and language.lower() not in ("en", "english"):
        raise UserError(f"{key}.language={language}: {key}.model={model} is English-only", code="recogniser")
    return {}


class SpeakerModel:
    """A speaker-verification model (an x-vector head, as WavLMForXVector has): one embedding per clip."""

    def __init__(self, folder: Path, model: str, device: str, key: str = "speaker.model"):
        from transformers import AutoFeatureExtractor, AutoModelForAudioXVector

        _quiet_transformers()
        try:
            self.features = AutoFeatureExtractor.from_pretrained(str(folder), trust_remote_code=False)
            self.model = AutoModelForAudioXVector.from_pretrained(str(folder), use_safetensors=True,
                                                                  trust_remote_code=False).to(device).eval()
        except Exception as e:
            raise _cannot_load(key, model, folder, e)
        self.device = device
        self.sample_rate = getattr(self.features, "sampling_rate", SAMPLE_RATE)

    def embed(self, wav):
        """The embedding of a mono wav at `self.sample_rate` (a 1-d tensor or array)."""
        import warnings

        import torch

        inputs = self.features(wav.numpy() if hasattr(wav, "numpy") else wav, sampling_rate=self.sample_rate,
                               return_tensors="pt")
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*key_padding_mask")  # torch's note on transformers' masks
            return self.model(**{k: v.to(self.device) for k, v in inputs.items()}).embeddings[0].float().cpu()
