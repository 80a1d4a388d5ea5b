"""python -m finetune.prepare input=<metadata file or folder> out=<dataset folder> [model=f5tts] [strict=true]
python -m finetune.prepare input=<folder of recordings> transcribe=true out=<dataset folder> [slice.*] [asr.*]

Reads the rows, checks every one, computes each kept clip's mel spectrogram once with the model
family's mel settings, and writes a dataset folder that runs name with data.path=:
  dataset.json   summary (counts, hours, mel settings, content hash, recogniser) and the kept clips
  report.txt     every skipped row with its reason
  reference.wav  the first kept clip at the model's sample rate (a run's reference clip)
  mel/           one safetensors file per clip, named by its audio's hash: a re-run reuses them
With transcribe=true the rows come from recordings: they are cut into clips and transcribed into
metadata.csv, which a person may edit before running the same command again (recordings.py).
The folder is locked (.lock) for the whole preparation: a second one into the same out= is refused.
"""
import json
import math
import os
import re
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import hydra
from omegaconf import DictConfig

from . import loudness, quality, recordings, slicing, transcribe
from .config import plain, precompose, register
from .media.dataset import DATASET_FORMAT, dataset_hash, read_dataset
from .lock.errors import UserError, first_line, user_errors
from .lock.files import FolderLock, atomic_write, atomic_write_bytes, sha256_bytes
from .prepare_schema import PrepareConfig, check_ranges
from .sources import Problem, read_rows
from .workers import pmap

# reported, not counted against strict=true: a header row, a row whose quotes changed its text (read as
# upstream reads it), speech too short to cut into a clip, the clips a person dropped, an edited metadata
# file kept aside, clips under filter.min_quality
NOT_COUNTED = ("header", "quoted", "short_piece", "dropped", "replaced", "low_quality")
SHOWN = 20  # problem lines printed; report.txt has them all
# what prepare writes in out=
OWN = {"mel", ".lock", "clips", recordings.STATE, transcribe.CACHE, quality.CACHE, recordings.METADATA}


MEL_NAME = re.compile(r"[0-9a-f]{40}-[0-9a-f]{8}\.safetensors")  # what mel_name() writes, and nothing else


def mel_name(audio_sha: str, mel: dict, level: dict | None = None) -> str:
    """The cache file of one clip's mel, by the audio's content, the mel settings and the loudness it was set to
    (`level`: the loudness settings; named as before when they are off)."""
    key = mel if not level or level["target_lufs"] is None else {"mel": mel, "loudness": level}
    return f"mel/{audio_sha[:40]}-{sha256_bytes(json.dumps(key, sort_keys=True).encode())[:8]}.safetensors"


# ---- one clip (runs in a worker process) ---------------------------------------------------------

def _cached(path: Path):
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        lufs = meta.get("lufs", "None")
        return {"seconds": float(meta["seconds"]), "peak_db": float(meta["peak_db"]), "frames": int(meta["frames"]),
                "lufs": None if lufs == "None" else float(lufs), "limited": meta.get("limited") == "True"}
    except Exception:  # absent, or left half-written by a killed run: compute it again
        return None


def process(audio: str, out: str, mel: dict, bounds: dict, level: dict) -> dict:
    """Check one audio file and write its mel (of the audio set to loudness.target_lufs); returns {"kind": "ok",
    ...} or a problem kind and detail."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from .media.audio import decode, mel_spectrogram, resample

    try:
        data = Path(audio).read_bytes()
    except FileNotFoundError:
        return {"kind": "missing_file", "detail": f"{audio} not found"}
    except OSError as e:
        return {"kind": "unreadable", "detail": f"{audio}: {e.strerror}"}
    sha = sha256_bytes(data)
    name = mel_name(sha, mel, level)
    info = _cached(Path(out) / name)
    if info is None:
        try:
            samples, sr = decode(data)
        except Exception as e:  # soundfile raises several types for corrupt input
            return {"kind": "unreadable", "detail": f"cannot decode {Path(audio).name} "
                                                    f"({first_line(e, 80)}); use wav, flac or ogg"}
        if samples.size == 0:
            return {"kind": "empty_audio", "detail": f"{Path(audio).name} has no samples"}
        problem = slicing.level_problem(samples, bounds)  # NaN, inf, or far over full scale: never cached
        if problem:
            return problem
        peak = float(np.abs(samples).max())
        info = {"seconds": samples.size / sr, "peak_db": 20 * math.log10(peak) if peak > 0 else -math.inf}
        problem = _check(info, bounds)
        if problem:
            return problem
        info |= {"lufs": None, "limited": False}
        if level["target_lufs"] is not None:
            samples, set_to = loudness.normalize(samples, sr, level["target_lufs"], level["peak_db"])
            info |= set_to
        spec = mel_spectrogram(resample(torch.from_numpy(samples), sr, mel["target_sample_rate"]), mel)
        info["frames"] = spec.shape[1]
        target = Path(out) / name
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        save_file({"mel": spec.contiguous()}, str(tmp), metadata={k: str(v) for k, v in info.items()})
        os.replace(tmp, target)  # no fsync: a cache file lost in a crash is computed again
    return _check(info, bounds) or {"kind": "ok", "audio_sha256": sha, "mel": name, **info}


def _check(info: dict, bounds: dict):
    s = info["seconds"]
    if s < bounds["min_seconds"]:
        return {"kind": "too_short", "detail": f"{s:.2f} s is under min_seconds={bounds['min_seconds']}"}
    if s > bounds["max_seconds"]:
        return {"kind": "too_long", "detail": f"{s:.2f} s is over max_seconds={bounds['max_seconds']}"}
    if info["peak_db"] < bounds["silence_db"]:
        return {"kind": "silent", "detail": f"peak {info['peak_db']:.1f} dBFS is under silence_db={bounds['silence_db']}"}
    if info["peak_db"] > bounds["loud_db"]:
        return {"kind": "too_loud", "detail": f"peak {info['peak_db']:+.1f} dBFS is over loud_db={bounds['loud_db']}"}
    return None


def text_problem(text: str, seconds: float, bounds: dict):
    """More text than anyone says in the clip's time: a wrong row, or a file pasted into the text column."""
    limit = bounds["max_chars_per_second"] * max(seconds, 1.0)
    if len(text) > limit:
        return {"kind": "text_too_long", "detail": f"{len(text)} characters for {seconds:.2f} s of audio, over "
                                                   f"max_chars_per_second={bounds['max_chars_per_second']:g} "
                                                   f"(limit {int(limit)}); is the row's text its own?"}
    return None


def process_all(audio: list[str], out: Path, mel: dict, bounds: dict, level: dict, workers: int) -> list[dict]:
    from functools import partial

    if level["target_lufs"] is not None:
        import pyloudnorm  # noqa: F401  (with scipy: once here, not in every forked worker)
        import scipy.ndimage  # noqa: F401
    job = partial(process, out=str(out), mel=mel, bounds=bounds, level=level)
    return pmap(job, audio, workers, "prepare", "clip")


# ---- the dataset folder --------------------------------------------------------------------------

def check_out(out: Path, source: Path, fmt: str) -> None:
    """A dataset folder is only ever refreshed from its own input, never pointed at another folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file; give a folder for the dataset (new or empty)", code="data")
    if fmt in ("folder", "recordings") and (out == source or source in out.parents):
        raise UserError(f"out={out} lies inside input={source}, whose audio and .txt files are all read; "
                        "pick an out= outside it", code="data")
    if (out / "dataset.json").exists():
        before = read_dataset(out)["summary"]["source"]
        if source == out / recordings.METADATA and before.get("format") == "recordings":
            raise UserError(f"{source} is read by the command that wrote it: run python -m finetune.prepare "
                            f"input={before['input']} transcribe=true out={out} again, and your edits are kept", code="data")
        if before["input"] != str(source):
            raise UserError(f"out={out} holds a dataset prepared from {before['input']}; pick another out= for {source}", code="data")
    elif out.exists() and any(p.name not in OWN and not (p.name.startswith("metadata.") and p.suffix == ".csv")
                              for p in out.iterdir()):
        raise UserError(f"out={out} is a folder with other files in it; pick a new or empty folder", code="data")


def _natural(where: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", where)]


def prepare(cfg: dict, review: recordings.Review | None = None) -> Path:
    """Check the config, lock out=, and prepare; `review` (transcribe=true only): a person's edits to apply."""
    check_ranges(cfg)
    source = Path(cfg["input"]).expanduser().resolve()
    out = Path(cfg["out"]).expanduser().resolve()
    model, recs = None, None
    try:
        if cfg["transcribe"]:
            if any(c in str(out) for c in "|\n\r"):
                raise UserError(f"out={out}: holds | or a line break, which the metadata file's paths cannot; "
                                "pick another folder", code="data")
            transcribe.check_language(cfg["asr"]["language"])
            transcribe.pick_device(cfg["asr"]["device"])
            if cfg["slice"]["detector"] == "vad":
                _vad()  # the package is there
            recs = recordings.recordings(source)
            model = transcribe.model_folder(cfg["asr"])  # offline with no model: one line, nothing written
            fmt, rows, problems = "recordings", None, []
        else:
            fmt, rows, problems = read_rows(source, cfg["format"])
        if cfg["quality"]["model"]:
            transcribe.pick_device(cfg["quality"]["device"], "quality.device")
            from .media.quality import identity

            identity()  # the package is there
    except OSError as e:
        raise UserError(f"input={source}: cannot read it ({e.strerror or e})", code="io")
    try:
        check_out(out, source, fmt)
        (out / "mel").mkdir(parents=True, exist_ok=True)
        lock = FolderLock(out, "prepare").acquire()
    except OSError as e:
        raise UserError(f"out={out}: cannot write there ({e.strerror or e}); pick a folder you can write", code="io")
    try:
        return _prepare(cfg, source, out, fmt, rows, problems, recs, model, review)
    except OSError as e:  # a full disk, a folder made read-only meanwhile
        raise UserError(f"{e.filename or out}: {e.strerror or e}; the preparation stopped there (run it again once "
                        "the folder can be written: finished work is reused)", code="data")
    finally:
        lock.release()


def _prepare(cfg, source, out, fmt, rows, problems, recs, model, review) -> Path:
    from .media.audio import load_audio, write_wav

    mel = cfg["model"]["mel"]
    bounds = {k: cfg[k] for k in ("min_seconds", "max_seconds", "silence_db", "loud_db", "max_chars_per_second")}
    listed = None
    if fmt == "recordings":
        listed = recordings.list_clips(source, out, cfg, recs, model, review)
        _, rows, problems = read_rows(listed.metadata, "csv")
        problems = [p for p in problems if p.kind != "header"] + listed.problems  # the header is ours
    elif review is not None:
        raise UserError(f"{out} was prepared from {source}, a file of yours; edit it and prepare again", code="data")

    workers = cfg["workers"] or os.cpu_count() or 1
    results = process_all([str(r.audio) for r in rows], out, mel, bounds, cfg["loudness"], workers)
    clips, measured = [], []
    for row, res in zip(rows, results):
        if res["kind"] == "ok":
            res = text_problem(row.text, res["seconds"], bounds) or res
        if res["kind"] != "ok":
            problems.append(Problem(row.where, res["kind"], res["detail"]))
            continue
        audio = str(row.audio)
        measured.append(res)
        clips.append({"row": row.where, "audio": audio, "text": row.text,
                      **({"tokens": row.tokens} if row.tokens else {}), "audio_sha256": res["audio_sha256"],
                      "seconds": round(res["seconds"], 4), "frames": res["frames"], "mel": res["mel"],
                      **({"lufs": round(res["lufs"], 2)} if res["lufs"] is not None else {}),
                      "text_by": listed.text_by.get(audio, "person") if listed else "person",
                      **(listed.provenance.get(audio, {}) if listed else {})})
    used = {c["mel"] for c in clips}  # kept in mel/, with those of clips the filter leaves out: a restore reuses them
    clips, scored = _scored(clips, cfg, out, workers, problems, listed)
    problems.sort(key=lambda p: _natural(p.where))
    counted = Counter(p.kind for p in problems if p.kind not in NOT_COUNTED)
    skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(counted.items())) or "none"
    lines = [f"{p.where}: {p.kind}: {p.detail}" for p in problems]
    left_out = _left_out(listed, sum(1 for p in problems if p.kind == "low_quality"), cfg)

    if cfg["strict"] and counted:
        print("\n".join(lines), file=sys.stderr)
        raise UserError(f"strict=true: {sum(counted.values())} bad rows in {source} ({skipped}); fix them or "
                        "drop strict=true to skip them; nothing was written to dataset.json", code="data")
    if not clips:
        print("\n".join(lines[:SHOWN]), file=sys.stderr)
        raise UserError(f"{source}: no usable rows ({skipped}{'; ' + left_out if left_out else ''}); see the "
                        "reasons above", code="data")

    hop, sr = mel["hop_length"], mel["target_sample_rate"]
    frames = sum(c["frames"] for c in clips)
    loud = loudness.summary(cfg["loudness"], measured)
    summary = {
        "format": DATASET_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"input": str(source), "format": fmt} | ({"metadata": str(listed.metadata)} if listed else {}),
        "mel": mel,
        "bounds": bounds,
        "loudness": loud,  # before the hash: the hash covers the loudness the mel were set to
        "sha256": dataset_hash(mel, clips, loud),
        "clips": len(clips),
        "hours": round(frames * hop / sr / 3600, 4),
        "frames": frames,
        "longest_frames": max(c["frames"] for c in clips),
        "rows_skipped": dict(sorted(counted.items())),
        "left_out": {"short_pieces": listed.short if listed else None,
                     "low_quality": sum(1 for p in problems if p.kind == "low_quality")},
        "quality": scored,
        "text_by": dict(sorted(Counter(c["text_by"] for c in clips).items())),
        "asr": listed.asr if listed else None,  # the recogniser of the first transcripts: model id, weights sha256
        "slice": cfg["slice"] | (_vad() if cfg["slice"]["detector"] == "vad" else {}) if listed else None,
    }
    wav = load_audio(clips[0]["audio"], sr)
    if cfg["loudness"]["target_lufs"] is not None:  # the reference clip as the run's mel hear it
        import torch

        wav = torch.from_numpy(loudness.normalize(wav.numpy(), sr, cfg["loudness"]["target_lufs"],
                                                  cfg["loudness"]["peak_db"])[0])
    atomic_write(out / "reference.wav", lambda tmp: write_wav(tmp, wav, sr))
    atomic_write_bytes(out / "report.txt", "".join(f"{line}\n" for line in lines).encode())
    atomic_write_bytes(out / "dataset.json",
                       json.dumps({"summary": summary, "clips": clips}, indent=1, ensure_ascii=False).encode())
    for stale in (out / "mel").glob("*.safetensors"):  # clips no longer in the input (only after the save)
        if f"mel/{stale.name}" not in used and MEL_NAME.fullmatch(stale.name):  # never a file we did not write
            stale.unlink(missing_ok=True)
    if listed:
        slicing.sweep(out / "clips", listed.keep)

    if lines:
        more = f"\n... {len(lines) - SHOWN} more in {out / 'report.txt'}" if len(lines) > SHOWN else ""
        print("\n".join(lines[:SHOWN]) + more, file=sys.stderr)
    if listed:
        print(f"transcripts: {listed.metadata} (edit it, or drop rows, and run the same command again)", file=sys.stderr)
    print(f"dataset: {out} ({len(clips)} clips, {summary['hours']:.3f} h, sha256 {summary['sha256'][:12]}; "
          f"skipped: {skipped}{'; ' + left_out if left_out else ''})")
    return out


def _scored(clips: list[dict], cfg: dict, out: Path, workers: int, problems: list, listed) -> tuple[list, dict | None]:
    """The clips with their quality scores (quality.model), less those under filter.min_quality (reported; a clip a
    person restored in Review stays), and what the summary records of the scores."""
    if cfg["quality"]["model"] is None:
        return clips, None
    found, who = quality.scores([(c["audio"], c["audio_sha256"]) for c in clips], out, cfg["quality"], workers)
    least, restored = cfg["filter"]["min_quality"], listed.restored if listed else set()
    kept = []
    for c in clips:
        c["quality"] = round(found[c["audio_sha256"]], 3)
        if least is not None and c["quality"] < least and c["audio"] not in restored:
            problems.append(Problem(c["row"], "low_quality", f"quality {c['quality']:.2f} is under "
                                    f"filter.min_quality={least:g}; {quality.restore_hint(listed is not None)}"))
        else:
            kept.append(c)
    return kept, (quality.summary(who, kept, least, len(clips) - len(kept)) if kept else None)


def _left_out(listed, low_quality: int, cfg: dict) -> str:
    """The result line's account of clips left out on purpose (not bad rows): short pieces, low quality."""
    parts = []
    short = listed.short if listed else None
    if short and short["pieces"]:
        parts.append(f"{short['pieces']} short piece{'s' * (short['pieces'] != 1)} of speech ({short['seconds']:.2f} s) "
                     "no neighbour could take")
    if low_quality:
        parts.append(f"{low_quality} under filter.min_quality={cfg['filter']['min_quality']:g}")
    return f"left out: {', '.join(parts)}" if parts else ""


def _vad() -> dict:
    from .vad import identity

    return {"vad": identity()}


register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    with user_errors():
        prepare(plain(cfg, PrepareConfig))


if __name__ == "__main__":
    with user_errors():
        precompose("prepare", sys.argv[1:], "python -m finetune.prepare --help")
    main()
