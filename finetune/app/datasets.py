"""Reading what lies under data_root: prepared datasets (dataset.json + report.txt) and candidate inputs."""
import os
from pathlib import Path

from finetune.media.dataset import read_dataset
from finetune.lock.errors import UserError

DEPTH = 3  # how deep under data_root to look: a data folder can hold many thousand clips, never walked whole
INPUT_SUFFIXES = (".csv", ".txt", ".tsv", ".list")


def _walk(root: Path):
    """(folder, subfolders, files) under root to DEPTH levels, skipping hidden folders and mel caches."""
    root = Path(root)
    for dirpath, dirs, files in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "mel" and depth < DEPTH)
        yield Path(dirpath), dirs, files


def prepared(root: Path) -> list[str]:
    """Prepared datasets under root, as paths relative to it."""
    found = []
    for folder, dirs, files in _walk(root):
        if "dataset.json" in files:
            found.append(str(folder.relative_to(root)) if folder != root else ".")
            dirs[:] = []  # a dataset folder holds no other dataset
    return sorted(found)


def reviewable(root: Path) -> list[str]:
    """Prepared datasets under root whose clips were cut from recordings and transcribed (clips.json beside
    dataset.json): those a person can review."""
    return [d for d in prepared(root) if (Path(root) / d / "clips.json").is_file()]


def inputs(root: Path) -> list[str]:
    """Things python -m finetune.prepare can read, relative to root: folders with audio or a metadata
    file, and metadata files (prepared datasets themselves excluded)."""
    found = []
    for folder, dirs, files in _walk(root):
        if "dataset.json" in files:
            dirs[:] = []
            continue
        rel = folder.relative_to(root)
        if folder != root and ("metadata.csv" in files or "raw.arrow" in files
                               or any(f.lower().endswith((".wav", ".flac", ".ogg", ".mp3")) for f in files)):
            found.append(str(rel))
        found += [str(rel / f) for f in files if f.lower().endswith(INPUT_SUFFIXES) and f != "report.txt"]
    return sorted(found)


def summary(folder: Path) -> tuple[dict, str]:
    """A prepared dataset's summary and its report of skipped rows."""
    ds = read_dataset(folder)
    try:
        report = (Path(folder) / "report.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        report = ""
    return ds["summary"], report


def describe(s: dict) -> str:
    skipped = ", ".join(f"{n} {kind}" for kind, n in (s.get("rows_skipped") or {}).items()) or "none"
    line = (f"**{s.get('clips')} clips, {s.get('hours', 0):.3f} h** (longest {s.get('longest_frames')} mel frames) "
            f"from `{s.get('source', {}).get('input')}` ({s.get('source', {}).get('format')}); skipped rows: "
            f"{skipped}; sha256 `{str(s.get('sha256'))[:12]}`; prepared {s.get('created', '')}")
    short = ((s.get("left_out") or {}).get("short_pieces") or {})
    if short.get("pieces"):
        line += f"; left out: {short['pieces']} short piece(s) of speech ({short['seconds']:.2f} s)"
    if s.get("loudness"):
        line += f"; loudness {s['loudness']['target_lufs']:g} LUFS"
    q = s.get("quality")
    if q:
        kept = q["kept"]
        line += (f"; quality ({q['model']}) {kept['min']:.2f}-{kept['max']:.2f}, median {kept['median']:.2f}"
                 + (f", {q['left_out']} under filter.min_quality={q['min_quality']:g}" if q.get("min_quality") else ""))
    return line


HEADERS = ["row", "text", "seconds", "quality", "audio"]  # quality: the clip's score (MOS 1-5), None unscored


def clips(folder: Path, contains: str = "", limit: int = 500) -> list[list]:
    """[row, text, seconds, quality, audio] of a dataset's clips, those whose text or row holds `contains`."""
    try:
        ds = read_dataset(folder)
    except UserError:
        return []
    needle = contains.strip().lower()
    rows = []
    for c in ds["clips"]:
        if needle and needle not in c["text"].lower() and needle not in c["row"].lower():
            continue
        rows.append([c["row"], c["text"], c["seconds"], c.get("quality"), c["audio"]])
        if len(rows) >= limit:
            break
    return rows
