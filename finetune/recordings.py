"""From a folder of recordings to the metadata file that a person may edit: slice, transcribe, merge.

In the dataset folder (out=):
  metadata.csv  `audio_file|text` rows, absolute paths (upstream's format): yours to edit; the review
                page writes it too. The preparation then reads it like any metadata file.
  clips/        the clips, and one record per recording of where they were cut (slicing.py)
  asr.jsonl     the recogniser's transcripts by clip audio hash and recogniser (transcribe.py)
  clips.json    this tool's own notes: each clip's recording and times, and the text it last wrote
                into metadata.csv for it; a row whose text differs from that is a person's

For each clip cut from the recordings, on every run:
  a row whose text is the one the tool wrote   -> the recogniser's text (it follows asr.model)
  a row with any other text                    -> a person's: kept as it is
  no row, though the tool wrote one before     -> dropped by a person: stays dropped (add a row to restore it)
  no row, never written                        -> a new clip: a row with the recogniser's text
Rows naming other audio files are kept. Rows of clips no longer cut (a recording removed, other
slicing settings) are removed, and if a person had edited any of them the old file is kept first
as metadata.<time>.csv. Delete metadata.csv to start again from the recogniser's text.
"""
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from . import slicing, transcribe
from .lock.errors import UserError, first_line
from .lock.files import atomic_write_bytes, sha256_file
from .sources import AUDIO_EXTENSIONS, HEADER_NAMES, Problem, format_row, split_rows
from .workers import pmap

METADATA = "metadata.csv"
STATE = "clips.json"
STATE_FORMAT = "f5tune-clips/1"


@dataclass
class Review:
    """A person's decisions from the review page: new texts (restoring a dropped clip) and clips to drop."""
    texts: dict = field(default_factory=dict)  # clip audio path -> text
    dropped: set = field(default_factory=set)  # clip audio paths


@dataclass
class Listed:
    """What the preparation needs from this step."""
    metadata: Path
    problems: list  # per recording: unreadable, non_finite, no_clips, ...; notes: short pieces, dropped clips
    provenance: dict  # clip audio path -> {"source", "start", "end"}
    text_by: dict  # clip audio path -> "asr" | "person"
    asr: dict  # the recogniser: model, revision, weights_sha256, language
    keep: set = field(default_factory=set)  # names in clips/ in use
    short: dict = field(default_factory=dict)  # speech left out in pieces no neighbour could take: pieces, seconds
    restored: set = field(default_factory=set)  # clip audio paths a person restored in Review: never filtered out


def recordings(source: Path) -> list[tuple[str, Path]]:
    if source.is_file():
        return [(source.name, source)]
    if not source.is_dir():
        raise UserError(f"input={source}: no such file or folder; give a folder of recordings", code="missing")
    found = [(str(p.relative_to(source)), p) for p in sorted(source.rglob("*"))
             if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()]
    if not found:
        raise UserError(f"input={source}: no recordings ({', '.join(AUDIO_EXTENSIONS)}); "
                        "transcribe=true needs a folder of audio files", code="data")
    return found


def list_clips(source: Path, out: Path, cfg: dict, recs: list, model: tuple, review: Review | None = None) -> Listed:
    """Slice `recs` (from recordings()), transcribe what needs it with `model` (transcribe.model_folder), and
    write metadata.csv merged with a person's edits and the `review`."""
    settings, asr = cfg["slice"], cfg["asr"]
    folder, identity = model
    key = transcribe.recogniser_key(identity, asr["language"])
    clips_dir = out / "clips"
    clips_dir.mkdir(exist_ok=True)

    paths = [str(p) for _, p in recs]
    results = [slicing.cut_before(p, str(clips_dir), settings) for p in paths]  # re-runs stop here
    todo = [p for p, r in zip(paths, results) if r is None]
    if todo:
        slicing.warm_up()
        job = partial(slicing.slice_recording, clips_dir=str(clips_dir), settings=settings,
                      bounds={"loud_db": cfg["loud_db"]})
        cut = iter(pmap(job, todo, cfg["workers"] or os.cpu_count() or 1, "slice", "file"))
        results = [r if r is not None else next(cut) for r in results]
    problems, current, keep, seen = [], [], set(), {}
    for (rel, path), res in zip(recs, results):
        if res["kind"] != "ok":
            problems.append(Problem(rel, res["kind"], res["detail"]))
            continue
        if res["key"] in seen:
            problems.append(Problem(rel, "duplicate", f"the same audio as {seen[res['key']]}"))
            continue
        seen[res["key"]] = rel
        keep |= {f"{res['key']}.json"} | {c["file"] for c in res["clips"]}
        current += [{"audio": str(clips_dir / c["file"]), "source": str(path), "start": c["start"], "end": c["end"]}
                    | ({"short": True} if c.get("short") else {}) for c in res["clips"]]

    meta = out / METADATA
    rows = read_metadata(meta)
    before = read_state(out).get("clips", []) if rows is not None else []
    written = {c["audio"]: c["written"] for c in before}
    restored = {c["audio"] for c in before if c.get("restored")}
    in_file = dict(rows or {})
    ours = {c["audio"] for c in current}
    if review:
        unknown = sorted((set(review.texts) | set(review.dropped)) - ours)
        if unknown:
            raise UserError(f"{unknown[0]} is not a clip of {out} ({len(unknown)} unknown); list them again", code="data")
        both = sorted(set(review.texts) & set(review.dropped))
        if both:
            raise UserError(f"{both[0]} has a new text and is dropped too; choose one", code="data")
        bad = next((a for a, t in review.texts.items() if "|" in t or "\n" in t or "\r" in t), None)
        if bad:
            raise UserError(f"the text of {bad} holds | or a line break, which the metadata file cannot; remove it", code="data")

    def unedited(a):
        return a in in_file and in_file[a] == written.get(a)

    need = [c for c in current if unedited(c["audio"]) or (c["audio"] not in in_file and c["audio"] not in written)]
    if review:
        need = [c for c in need if c["audio"] not in review.texts and c["audio"] not in review.dropped]
    shas = {c["audio"]: sha256_file(c["audio"]) for c in need}
    heard = transcribe.transcribe([(a, s) for a, s in shas.items()], asr, folder, key, out) if need else {}
    recognised = {a: heard[s] for a, s in shas.items()}

    lines, notes, state = [], [], []
    for c in current:
        a = c["audio"]
        text, wrote = None, written.get(a)  # wrote: None for a row the tool never wrote (its notes were lost)
        vouched = a in restored
        if review and a in review.texts:
            text, vouched = " ".join(review.texts[a].split()), True
        elif review and a in review.dropped:
            vouched = False
        elif unedited(a) or (a not in in_file and a not in written):
            text = wrote = recognised[a]
            if c.get("short") and a not in in_file:  # a piece no neighbour could take: out until a person restores it
                text = None
        elif a in in_file:
            text = in_file[a]
        if text is None and c.get("short"):
            notes.append(Problem(Path(a).name, "short_piece", f"{c['end'] - c['start']:.2f} s of speech under "
                                 f"slice.min_seconds={settings['min_seconds']:g} that no neighbour could take within "
                                 f"slice.max_seconds={settings['max_seconds']:g}; restore it in Review (or add its row "
                                 "to metadata.csv) to use it"))
        elif text is None:
            notes.append(Problem(Path(a).name, "dropped", "its row was removed from metadata.csv; "
                                 "add the row back to use the clip again"))
        else:
            lines.append((a, text))
        # listed in clips.json: so a clip with no row stays dropped; restored: a person gave it a text in Review, and
        # the quality filter leaves it in
        state.append(c | {"written": wrote} | ({"restored": True} if vouched and text is not None else {}))
    removed = {a: t for a, t in in_file.items() if a not in ours and _is_clip(a, clips_dir)}
    lines += [(a, t) for a, t in in_file.items() if a not in ours and a not in removed]
    if any(t != written.get(a) for a, t in removed.items()):
        backup = out / f"metadata.{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}.csv"
        atomic_write_bytes(backup, meta.read_bytes())
        notes.append(Problem(METADATA, "replaced", f"rows you edited name clips no longer cut (other recordings "
                             f"or slicing settings); your file is kept as {backup.name}"))

    write_metadata(meta, lines)
    write_state(out, {"format": STATE_FORMAT, "config": cfg, "recogniser": identity | {"key": key}, "clips": state})
    final = dict(lines)
    text_by = {c["audio"]: "asr" if c["written"] == final.get(c["audio"]) else "person" for c in state}
    provenance = {c["audio"]: {"source": c["source"], "start": c["start"], "end": c["end"]} for c in current}
    left_out = [c["end"] - c["start"] for c in state if c.get("short") and c["audio"] not in final]
    return Listed(meta, problems + notes, provenance, text_by,
                  {k: identity[k] for k in ("model", "revision", "weights_sha256")} | {"language": asr["language"]},
                  keep, {"pieces": len(left_out), "seconds": round(sum(left_out), 3)},
                  {c["audio"] for c in state if c.get("restored")})


def _is_clip(audio: str, clips_dir: Path) -> bool:
    p = Path(audio)
    return p.parent == clips_dir and bool(slicing.CLIP.fullmatch(p.name))


# ---- the metadata file and the tool's notes ------------------------------------------------------

def read_metadata(meta: Path, with_lines: bool = False):
    """{audio path: text} in file order (and {audio path: line number}); None when there is no file. Every
    line must parse: the file is rewritten with new clips merged in, and a line it could not read would be lost."""
    try:
        data = meta.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UserError(f"{meta}: cannot read ({e.strerror})", code="io")
    records, bad = split_rows(data, source=str(meta))  # as prepare and upstream read it: CSV quoting
    if bad:
        raise UserError(f"{meta}:{bad[0][0]}: byte {bad[0][1]} is not UTF-8; save the file as UTF-8", code="data")
    rows, where = {}, {}
    for i, record in enumerate(records):
        n, cols = record.line, record.fields
        if i == 0 and cols[0].lower() in HEADER_NAMES:
            continue
        if len(cols) != 2 or not cols[0]:
            raise UserError(f"{meta}:{n}: {record.text[:60]!r} is not audio_file|text; fix the line (it is merged "
                            "with new clips, so the whole file must read)", code="data")
        audio = str((meta.parent / cols[0]).resolve())
        if audio in rows:
            raise UserError(f"{meta}:{n}: {cols[0]} is listed again (line {where[audio]}); keep one row", code="data")
        rows[audio], where[audio] = cols[1], n
    return (rows, where) if with_lines else rows


def write_metadata(meta: Path, lines: list[tuple[str, str]]) -> None:
    """Quoted where a field needs it, so that read_metadata, prepare and upstream read back these texts."""
    data = ("audio_file|text\n" + "".join(format_row([a, t]) + "\n" for a, t in lines)).encode()
    if not meta.is_file() or meta.read_bytes() != data:  # untouched when nothing changed
        atomic_write_bytes(meta, data)


def read_state(out: Path) -> dict:
    try:
        state = json.loads((out / STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UserError(f"{out / STATE}: unreadable ({first_line(e, 80)}); delete it and "
                        f"{out / METADATA} to start again from the recogniser's text", code="io")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{out / STATE}: not written by this tool; delete it and {out / METADATA} to start again", code="data")
    return state


def write_state(out: Path, state: dict) -> None:
    atomic_write_bytes(out / STATE, json.dumps(state, indent=1, ensure_ascii=False).encode())
