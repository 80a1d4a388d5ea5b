"""First transcripts of the clips, by Whisper through transformers' automatic-speech-recognition pipeline.

The model is a local folder (config.json, tokenizer and *.safetensors) or a hub id, fetched once into
the hub cache; offline with neither, the preparation stops in one line naming asr.model. Only
safetensors weights are loaded (nothing is unpickled), and no remote code runs.

The recogniser's identity is its weights' sha256 (and a hash of its config and tokenizer files) with
the language; transcripts are cached in <out>/asr.jsonl by clip audio hash and that identity, so a
re-run transcribes only clips it has not heard with that recogniser.
"""
import json
import os
import re
import sys
from pathlib import Path

from .lock.errors import UserError
from .lock.files import sha256_bytes, sha256_file

CACHE = "asr.jsonl"
SAMPLE_RATE = 16000  # what Whisper's feature extractor expects
FETCHED = ["*.json", "*.safetensors", "*.txt", "*.tiktoken"]  # config, tokenizer, weights: no pickles


def model_folder(asr: dict) -> tuple[Path, dict]:
    """The local folder of asr.model and what identifies it: {"model", "revision", "weights_sha256", "files_sha256"}."""
    model = asr["model"].strip()
    local = Path(model).expanduser()
    if local.is_dir():
        folder, label, revision = local.resolve(), str(local.resolve()), None
    elif model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UserError(f"asr.model={model}: no such folder; give a folder holding a Whisper model "
                        "(config.json, tokenizer files, *.safetensors) or a hub id such as openai/whisper-large-v3-turbo")
    else:
        folder, label = _fetch(model), model
        revision = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    weights = sorted(folder.glob("*.safetensors"))
    if not (folder / "config.json").is_file() or not weights:
        raise UserError(f"asr.model={model}: {folder} lacks config.json or *.safetensors weights; "
                        "save the model with save_pretrained (safetensors), or set asr.model=/path/to/local/whisper")
    shas = {p.name: sha256_file(p) for p in weights}
    weights_sha = shas[weights[0].name] if len(shas) == 1 else sha256_bytes(json.dumps(shas, sort_keys=True).encode())
    others = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.suffix in (".json", ".txt", ".tiktoken")}
    return folder, {"model": label, "revision": revision, "weights_sha256": weights_sha,
                    "files_sha256": sha256_bytes(json.dumps(others, sort_keys=True).encode())}


def _fetch(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=FETCHED))
    except Exception as e:
        fix = "set asr.model=/path/to/local/whisper (a folder saved with save_pretrained)"
        if constants.HF_HUB_OFFLINE:
            raise UserError(f"asr.model={repo_id}: not in the local hub cache and HF_HUB_OFFLINE is set; {fix}, "
                            "or fetch it once with the hub reachable")
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"asr.model={repo_id}: cannot download it ({reason[:120]}); {fix}")


def recogniser_key(identity: dict, language) -> str:
    """What a cached transcript was heard by: the model's files and the language, not where they lie."""
    body = {k: identity[k] for k in ("weights_sha256", "files_sha256")} | {"language": language, "task": "transcribe"}
    return sha256_bytes(json.dumps(body, sort_keys=True).encode())[:16]


def check_language(language) -> None:
    if language is None:
        return
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    if language.lower() not in LANGUAGES and language.lower() not in TO_LANGUAGE_CODE:
        raise UserError(f"asr.language={language}: not a Whisper language; use a code such as en, de, zh or a name "
                        "such as english, or null to detect it per clip")


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise UserError(f"asr.device={device}: not a device; use auto, cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"asr.device={device}: no CUDA device here; use asr.device=cpu")
    if kind not in ("cpu", "cuda", "mps", "xpu"):
        raise UserError(f"asr.device={device}: use auto, cpu, cuda or cuda:N")
    return device


# ---- the cache -----------------------------------------------------------------------------------

def read_cache(out: Path) -> dict:
    """{(audio_sha256, recogniser): text}; a line torn by a kill is skipped."""
    found = {}
    try:
        lines = (out / CACHE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return found
    for line in lines:
        try:
            entry = json.loads(line)
            found[(entry["audio_sha256"], entry["recogniser"])] = str(entry["text"])
        except (ValueError, KeyError, TypeError):
            continue
    return found


def _append(out: Path, entries: list[dict]) -> None:
    with open(out / CACHE, "a", encoding="utf-8") as f:
        if f.tell() and not (out / CACHE).read_bytes().endswith(b"\n"):
            f.write("\n")  # after a torn line
        f.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        f.flush()
        os.fsync(f.fileno())


def clean(text: str) -> str:
    """One line without the metadata file's separator or control characters."""
    text = "".join(" " if c == "|" or (ord(c) < 32 or 127 <= ord(c) < 160) else c for c in text)
    return " ".join(text.split())


# ---- transcription -------------------------------------------------------------------------------

def transcribe(audio: list[tuple[str, str]], asr: dict, folder: Path, key: str, out: Path) -> dict:
    """{audio_sha256: text} for each (path, audio_sha256); clips the cache holds are not heard again."""
    cache = read_cache(out)
    texts = {sha: cache[(sha, key)] for _, sha in audio if (sha, key) in cache}
    todo = list({sha: path for path, sha in audio if sha not in texts}.items())
    if not todo:
        return texts
    pipe = _pipeline(folder, asr)
    generate = {}
    if getattr(pipe.model.generation_config, "is_multilingual", False):
        generate = {"task": "transcribe"} | ({"language": asr["language"]} if asr["language"] else {})
    elif asr["language"] and asr["language"].lower() not in ("en", "english"):
        raise UserError(f"asr.language={asr['language']}: asr.model={asr['model']} is English-only")

    from tqdm import tqdm

    step = asr["batch_size"] * 4  # results reach the cache every few batches: a kill loses little
    with tqdm(total=len(todo), desc="transcribe", unit="clip", file=sys.stderr, mininterval=0.5) as bar:
        for i in range(0, len(todo), step):
            part = todo[i:i + step]
            heard = pipe([_load(path) for _, path in part], batch_size=asr["batch_size"], generate_kwargs=generate,
                         return_timestamps=False)
            entries = [{"audio_sha256": sha, "recogniser": key, "text": clean(h["text"])} for (sha, _), h in zip(part, heard)]
            _append(out, entries)
            texts |= {e["audio_sha256"]: e["text"] for e in entries}
            bar.update(len(part))
    return texts


def _load(path: str) -> dict:
    import torch

    from .lock.audio import decode, resample

    samples, sr = decode(Path(path).read_bytes())
    return {"raw": resample(torch.from_numpy(samples), sr, SAMPLE_RATE).numpy(), "sampling_rate": SAMPLE_RATE}


def _pipeline(folder: Path, asr: dict):
    import torch
    import transformers
    from transformers import pipeline

    transformers.utils.logging.set_verbosity_error()  # its deprecation chatter is not the user's to act on
    transformers.utils.logging.disable_progress_bar()
    device = pick_device(asr["device"])
    half = device.startswith("cuda") and torch.cuda.get_device_properties(device).major >= 7  # as upstream
    try:
        return pipeline("automatic-speech-recognition", model=str(folder), device=device,
                        dtype=torch.float16 if half else torch.float32,
                        model_kwargs={"use_safetensors": True}, trust_remote_code=False)
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"asr.model={asr['model']}: cannot load it from {folder} ({reason[:160]})")
