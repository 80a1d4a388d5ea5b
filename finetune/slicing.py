"""Long recordings cut into clips at their silences, each clip remembering its recording and times.

Silence is found by librosa.effects.split on 10 ms frames (RMS in dBFS under slice.silence_db).
Pauses shorter than slice.min_silence do not count. A clip ends at the first pause after it reaches
slice.min_seconds, or earlier when the next stretch of speech would take it past slice.max_seconds.
Speech with no pause for longer than slice.max_seconds is cut at its quietest 20 ms frame in the
second half of the allowed length (a breath or a stop; never leaving a piece under slice.min_seconds
when it can help it), and those cuts get no padding. A piece shorter than slice.min_seconds joins the
neighbour, before or after, with which it stays within slice.max_seconds; a piece no neighbour can take
is left out of the dataset, but cut and recorded like a clip (marked short), so it is counted and a
person can restore it. With slice.detector=vad, speech is found by a voice-activity model (vad.py)
instead of by loudness.

Clips are written once into <out>/clips/: their names and a record <key>.json per recording come
from a key over the recording's bytes and the slicing settings, so a re-run with both unchanged
finds them and cuts nothing.
"""
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from .lock.errors import first_line
from .lock.files import atomic_write_bytes, sha256_bytes

VERSION = 2  # part of every clip's key: a change to the cutting rules cuts again
HOP_SECONDS = 0.01
RECORD = re.compile(r"[0-9a-f]{16}\.json")
CLIP = re.compile(r".+_[0-9a-f]{8}_\d{3,}\.wav")  # what clip_name() writes, and nothing else


def slice_key(audio_sha: str, settings: dict) -> str:
    body = {"audio_sha256": audio_sha, "slice": settings, "version": VERSION}
    if settings.get("detector") == "vad":  # another voice-activity model cuts again
        from .vad import identity

        body["vad"] = identity()["weights_sha256"]
    return sha256_bytes(json.dumps(body, sort_keys=True).encode())[:16]


def clip_name(stem: str, key: str, n: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60].strip("._") or "clip"  # no | or newline in the metadata file
    return f"{safe}_{key[:8]}_{n:03d}.wav"


# ---- where to cut (a pure function of the samples) ------------------------------------------------

def find_clips(y: np.ndarray, sr: int, s: dict) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """[(start, end)] in samples of the clips to cut, and of the pieces of speech left out (under min_seconds,
    and no neighbour could take them within max_seconds)."""
    hop = max(1, round(sr * HOP_SECONDS))
    frame = 2 * hop
    n = y.shape[0]
    spans = []
    for a, b in _sounds(y, sr, s, frame, hop):
        if spans and a - spans[-1][1] < s["min_silence"] * sr:  # a short pause: the same stretch of speech
            spans[-1][1] = b
        else:
            spans.append([a, b])

    pad = round(s["pad"] * sr)
    most, least = s["max_seconds"] * sr, s["min_seconds"] * sr
    pieces = []  # [start, end, padded on the left, padded on the right]
    for a, b in spans:
        pieces += _cut_long(y, a, b, int(most - 2 * pad), int(least), hop, frame)

    clips, cur = [], None
    for p in pieces:  # forward: a clip ends at the first pause after min_seconds, or before passing max_seconds
        if cur is not None and (cur[1] - cur[0] + 2 * pad >= least or p[1] - cur[0] + 2 * pad > most):
            clips.append(cur)
            cur = None
        cur = list(p) if cur is None else [cur[0], p[1], cur[2], p[3]]
    if cur is not None:
        clips.append(cur)
    _join_short(clips, pad, least, most)

    out, short = [], []
    for i, (a, b, pad_left, pad_right) in enumerate(clips):
        # padding stops at the recording's ends and halfway to the neighbouring clip
        low = 0 if i == 0 else (clips[i - 1][1] + a) // 2
        high = n if i == len(clips) - 1 else (b + clips[i + 1][0] + 1) // 2
        a, b = max(low, a - pad) if pad_left else a, min(high, b + pad) if pad_right else b
        (out.append((a, b)) if b - a >= least else short.append((a, b)))
    return out, short


def _sounds(y, sr: int, s: dict, frame: int, hop: int) -> list[tuple[int, int]]:
    """Where there is sound: speech found by the voice-activity model (slice.detector=vad), or frames louder than
    slice.silence_db (energy)."""
    if s.get("detector", "energy") == "vad":
        from .vad import speech_spans

        return speech_spans(y, sr, s["min_silence"])
    import librosa

    n = y.shape[0]
    intervals = librosa.effects.split(y, top_db=-s["silence_db"], ref=1.0, frame_length=frame, hop_length=hop)
    # librosa ends an interval at the first frame whose window is all silence; that window starts a hop earlier
    return [(int(a), int(b if b >= n else max(a + 1, b - (frame - hop)))) for a, b in intervals]


def _join_short(clips: list[list], pad: int, least: float, most: float) -> None:
    """A clip under min_seconds joins the neighbour (before or after) with which it stays within max_seconds; the
    one across the shorter pause when both can. The forward pass alone left a short last sentence out."""
    i = 0
    while i < len(clips):
        a, b = clips[i][:2]
        if b - a + 2 * pad >= least:
            i += 1
            continue
        options = []  # (pause, index of the pair's first clip)
        if i > 0 and b - clips[i - 1][0] + 2 * pad <= most:
            options.append((a - clips[i - 1][1], i - 1))
        if i + 1 < len(clips) and clips[i + 1][1] - a + 2 * pad <= most:
            options.append((clips[i + 1][0] - b, i))
        if not options:
            i += 1
            continue
        j = min(options)[1]
        first, second = clips[j], clips.pop(j + 1)
        clips[j] = [first[0], second[1], first[2], second[3]]
        i = j  # the joined clip may still be short


def _cut_long(y, a: int, b: int, limit: int, least: int, hop: int, frame: int) -> list[list]:
    """A stretch of speech in pieces of at most `limit` samples, cut at the quietest frame the rules allow."""
    import librosa

    pieces, left = [], True
    limit = max(limit, 2 * frame)
    while b - a > limit:
        low = a + min(max(least, limit // 2), limit - frame)  # pieces no shorter than a clip may be
        high = min(a + limit, b - least)  # nor a last piece too short to keep
        window = y[low:high if high - low >= frame else a + limit]
        rms = librosa.feature.rms(y=window, frame_length=frame, hop_length=hop, center=False)[0]
        cut = low + int(np.argmin(rms)) * hop + frame // 2
        pieces.append([a, cut, left, False])
        a, left = cut, False
    pieces.append([a, b, left, True])
    return pieces


# ---- one recording -------------------------------------------------------------------------------

def slice_recording(path: str, clips_dir: str, settings: dict, bounds: dict) -> dict:
    """Cut one recording (or find its clips already cut). Returns {"kind": "ok", "clips": [...], ...}
    or a problem {"kind": ..., "detail": ...} as the report names it."""
    from .media.audio import decode

    path, clips_dir = Path(path), Path(clips_dir)
    try:
        data = path.read_bytes()
    except OSError as e:
        return {"kind": "unreadable", "detail": f"{path.name}: {e.strerror}"}
    sha = sha256_bytes(data)
    key = slice_key(sha, settings)
    found = _record(clips_dir, key)
    if found:
        return found | {"audio_sha256": sha}
    try:
        y, sr = decode(data)
    except Exception as e:  # soundfile raises several types for corrupt input
        return {"kind": "unreadable", "detail": f"cannot decode {path.name} "
                                                f"({first_line(e, 80)}); use wav, flac or ogg"}
    if y.size == 0:
        return {"kind": "empty_audio", "detail": f"{path.name} has no samples"}
    problem = level_problem(y, bounds)
    if problem:
        return problem
    spans, short = find_clips(y, sr, settings)
    if not spans and not short:
        heard = "the voice-activity model found no speech" if settings.get("detector") == "vad" else \
            f"no sound over slice.silence_db={settings['silence_db']} dBFS"
        return {"kind": "no_clips", "detail": f"{path.name}: {heard}"}
    subtype = "FLOAT" if np.abs(y).max() > 1 else "PCM_16"  # a float file over full scale is not clipped
    clips = []
    # pieces left out are cut too (marked short): a person may restore one in Review
    for n, (a, b, left_out) in enumerate(sorted([(a, b, False) for a, b in spans] + [(a, b, True) for a, b in short])):
        name = clip_name(path.stem, key, n)
        _write_clip(clips_dir / name, y[a:b], sr, subtype)
        clips.append({"file": name, "start": round(a / sr, 3), "end": round(b / sr, 3)}
                     | ({"short": True} if left_out else {}))
    record = {"source_sha256": sha, "slice": settings, "clips": clips}
    atomic_write_bytes(clips_dir / f"{key}.json", json.dumps(record, indent=1).encode())  # last: the clips are whole
    return {"kind": "ok", "key": key, "audio_sha256": sha, "clips": clips}


def cut_before(path: str, clips_dir: str, settings: dict) -> dict | None:
    """slice_recording's result when the recording was cut with these settings before and its clips are all
    there; None otherwise (or when it cannot be read: slice_recording says why)."""
    try:
        sha = sha256_bytes(Path(path).read_bytes())
    except OSError:
        return None
    found = _record(Path(clips_dir), slice_key(sha, settings))
    return found | {"audio_sha256": sha} if found else None


def _record(clips_dir: Path, key: str) -> dict | None:
    try:
        done = json.loads((clips_dir / f"{key}.json").read_text(encoding="utf-8"))
        if all((clips_dir / c["file"]).is_file() for c in done["clips"]):
            return {"kind": "ok", "key": key, "clips": done["clips"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not cut yet, or cut short by a kill: cut again
    return None


def warm_up() -> None:
    """librosa compiles its frame functions on first use (1-2 s): once here, not in every forked worker."""
    find_clips(np.zeros(4000, np.float32), 8000, {"min_seconds": 0.1, "max_seconds": 0.4, "silence_db": -40.0,
                                                  "min_silence": 0.1, "pad": 0.0})


def level_problem(y: np.ndarray, bounds: dict):
    """NaN or infinite samples, or a peak far over full scale: such audio would poison a run."""
    finite = np.isfinite(y)
    if not finite.all():
        return {"kind": "non_finite", "detail": f"{y.size - int(finite.sum())} NaN or infinite samples; "
                                                "export the audio again"}
    peak = float(np.abs(y).max())
    peak_db = 20 * math.log10(peak) if peak > 0 else -math.inf
    if peak_db > bounds["loud_db"]:
        return {"kind": "too_loud", "detail": f"peak {peak_db:+.1f} dBFS is over loud_db={bounds['loud_db']} "
                                              "(samples far outside -1..1); normalise it"}
    return None


def _write_clip(target: Path, y: np.ndarray, sr: int, subtype: str) -> None:
    import soundfile as sf

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    sf.write(str(tmp), y, sr, format="WAV", subtype=subtype)
    os.replace(tmp, target)  # no fsync: a clip lost in a crash has no record yet, so it is cut again


def sweep(clips_dir: Path, keep: set[str]) -> None:
    """Clips and records of recordings or settings no longer in use (`keep`: the names in use); only names
    this module writes."""
    for p in clips_dir.iterdir():
        if (RECORD.fullmatch(p.name) or CLIP.fullmatch(p.name)) and p.name not in keep:
            p.unlink(missing_ok=True)
        elif p.name.startswith(".") and ".tmp-" in p.name:  # left by a killed run (the folder lock is ours)
            p.unlink(missing_ok=True)
