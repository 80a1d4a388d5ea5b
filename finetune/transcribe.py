"""First transcripts of the clips, by Whisper through transformers' automatic-speech-recognition pipeline.

The model is a local folder (config.json, tokenizer and *.safetensors) or a hub id, fetched once into
the hub cache; offline with neither, the preparation stops in one line naming asr.model. Only
safetensors weights are loaded (nothing is unpickled), and no remote code runs.

The recogniser's identity is its weights' sha256 (and a hash of its config and tokenizer files) with
the language; transcripts are cached in <out>/asr.jsonl by clip audio hash and that identity, so a
re-run transcribes only clips it has not heard with that recogniser.
"""
import json
import sys
from pathlib import Path

from .media import asr as asr_models
from .lock.files import append_jsonl, read_jsonl, sha256_bytes

CACHE = "asr.jsonl"
SAMPLE_RATE = asr_models.SAMPLE_RATE


def model_folder(asr: dict) -> tuple[Path, dict]:
    """The local folder of asr.model and what identifies it: {"model", "revision", "weights_sha256", "files_sha256"}."""
    return asr_models.model_folder(asr["model"], "asr.model")


def recogniser_key(identity: dict, language) -> str:
    """What a cached transcript was heard by: the model's files and the language, not where they lie."""
    body = {k: identity[k] for k in ("weights_sha256", "files_sha256")} | {"language": language, "task": "transcribe"}
    return sha256_bytes(json.dumps(body, sort_keys=True).encode())[:16]


check_language = asr_models.check_language


def pick_device(device: str, key: str = "asr.device") -> str:
    from .lock.load import pick_device as pick

    return str(pick(device, key))


# ---- the cache -----------------------------------------------------------------------------------

def read_cache(out: Path) -> dict:
    """{(audio_sha256, recogniser): text}; a line torn by a kill is skipped."""
    found = {}
    for entry in read_jsonl(out / CACHE):
        try:
            found[(entry["audio_sha256"], entry["recogniser"])] = str(entry["text"])
        except (KeyError, TypeError):
            continue
    return found


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
    generate = asr_models.generate_kwargs(pipe, asr["language"], asr["model"])

    from .media.progress import bar as tqdm

    step = asr["batch_size"] * 4  # results reach the cache every few batches: a kill loses little
    with tqdm(total=len(todo), desc="transcribe", unit="clip", file=sys.stderr, mininterval=0.5) as bar:
        for i in range(0, len(todo), step):
            part = todo[i:i + step]
            heard = pipe([_load(path) for _, path in part], batch_size=asr["batch_size"], generate_kwargs=generate,
                         return_timestamps=False)
            entries = [{"audio_sha256": sha, "recogniser": key, "text": clean(h["text"])} for (sha, _), h in zip(part, heard)]
            append_jsonl(out / CACHE, entries)
            texts |= {e["audio_sha256"]: e["text"] for e in entries}
            bar.update(len(part))
    return texts


def _load(path: str) -> dict:
    import torch

    from .media.audio import decode, resample

    samples, sr = decode(Path(path).read_bytes())
    return {"raw": resample(torch.from_numpy(samples), sr, SAMPLE_RATE).numpy(), "sampling_rate": SAMPLE_RATE}


def _pipeline(folder: Path, asr: dict):
    return asr_models.recogniser(folder, asr["model"], pick_device(asr["device"]))
