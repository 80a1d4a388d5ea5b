"""Every prepared clip's speech-quality score (quality.model=distillmos; media/quality.py), cached in
<out>/quality.jsonl by the clip audio's hash and the predictor's weights, so a re-run scores only new clips; and
filter.min_quality, which leaves out the clips scored under it (reported per clip; a person may restore one in
Review, and it then stays in).

The score is of the clip as recorded: the predictor scales what it hears to its own peak, so the loudness gain
(loudness.target_lufs) would not change it.
"""
import sys
from pathlib import Path

from .lock.files import append_jsonl, read_jsonl

CACHE = "quality.jsonl"
CHUNK = 64  # clips scored between two appends to the cache: a kill loses little


def read_cache(out: Path, weights_sha: str) -> dict:
    """{audio_sha256: score} by these weights; a line torn by a kill is skipped."""
    found = {}
    for entry in read_jsonl(out / CACHE):
        try:
            if entry["weights_sha256"] == weights_sha:
                found[entry["audio_sha256"]] = float(entry["score"])
        except (ValueError, KeyError, TypeError):
            continue
    return found


def _score_file(path: str) -> float:
    from .media.audio import decode
    from .media.quality import score

    samples, sr = decode(Path(path).read_bytes())
    return score([samples], sr)[0]


def scores(clips: list[tuple[str, str]], out: Path, settings: dict, workers: int) -> tuple[dict, dict]:
    """({audio_sha256: score} for each (audio path, audio_sha256), the predictor's identity); clips the cache
    holds are not scored again. On a GPU (quality.device) in this process, else in `workers` processes."""
    from .media.quality import identity
    from .transcribe import pick_device
    from .workers import pmap

    who = identity()
    known = read_cache(out, who["weights_sha256"])
    todo = list({sha: path for path, sha in clips if sha not in known}.items())
    device = pick_device(settings["device"], "quality.device")
    for i in range(0, len(todo), CHUNK * max(1, workers)):
        part = todo[i:i + CHUNK * max(1, workers)]
        if device == "cpu":
            got = pmap(_score_file, [path for _, path in part], workers, "quality", "clip")
        else:
            got = _on_device([path for _, path in part], device)
        entries = [{"audio_sha256": sha, "weights_sha256": who["weights_sha256"], "score": s}
                   for (sha, _), s in zip(part, got)]
        append_jsonl(out / CACHE, entries)
        known |= {e["audio_sha256"]: e["score"] for e in entries}
    return known, who


def _on_device(paths: list[str], device: str) -> list[float]:
    from tqdm import tqdm

    from .media.audio import decode
    from .media.quality import score

    out = []
    for path in tqdm(paths, desc="quality", unit="clip", file=sys.stderr, mininterval=0.5):
        samples, sr = decode(Path(path).read_bytes())
        out += score([samples], sr, device)
    return out


def summary(who: dict, clips: list[dict], min_quality, left_out: int) -> dict:
    """What dataset.json records: the predictor, the filter, and the distribution of the scores of the kept clips."""
    import numpy as np

    got = np.array([c["quality"] for c in clips])
    spread = {k: round(float(v), 3) for k, v in zip(("min", "p10", "median", "p90", "max"),
                                                     np.percentile(got, [0, 10, 50, 90, 100]))}
    return who | {"scale": "MOS 1-5", "min_quality": min_quality, "left_out": left_out, "kept": spread}


def restore_hint(recordings: bool) -> str:
    return "untick drop in Review to keep it" if recordings else "lower filter.min_quality to keep it"

