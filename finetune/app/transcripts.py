"""Transcript review of a dataset prepared from recordings (transcribe=true): the table the Data page shows,
read from finetune.review.review_clips, and a person's decisions read back from the edited table for
finetune.review.save_review. A row names its clip by file name only; the clip's path is always the one the
dataset's own clips.json lists, never text from the page."""
from pathlib import Path

from finetune.lock.errors import UserError

from .paths import inside
from .widgets import audio_tag

HEADERS = ["clip", "listen", "drop", "text", "heard (recogniser)", "by", "seconds", "quality", "from", "problem"]
DATATYPES = ["str", "html", "bool", "str", "str", "str", "number", "number", "str", "str"]
DROP, TEXT = 2, 3
EDITABLE = (DROP, TEXT)
STATIC = [i for i in range(len(HEADERS)) if i not in EDITABLE]


def clips(folder: Path) -> list[dict]:
    from finetune.review import review_clips

    return review_clips(folder)


def table(listing: list[dict], data_root: Path) -> list[list]:
    """One row per clip cut from the recordings, in order. A dropped clip shows the recogniser's text, which
    it gets back when restored (unticked) unless the text is changed too."""
    rows = []
    for c in listing:
        audio = Path(c["audio"])
        player = audio_tag(audio) if inside(audio.resolve(), data_root) else "(outside data_root)"
        text = c["text"] if c["text"] is not None else (c["asr_text"] or "")
        problem = c["problem"] or ("" if c["in_dataset"] or c["dropped"] else "not in the dataset")
        by = c["text_by"] or ("short piece" if c.get("short") else "dropped")
        rows.append([audio.name, player, bool(c["dropped"]), text, c["asr_text"] or "", by, c["seconds"],
                     c.get("quality"), f"{Path(c['source']).name} {c['start']:.2f}-{c['end']:.2f} s", problem])
    return rows


def describe(listing: list[dict], summary: dict | None) -> str:
    kept = sum(1 for c in listing if c["in_dataset"])
    dropped = sum(1 for c in listing if c["dropped"])
    person = sum(1 for c in listing if c["text_by"] == "person")
    sources = len({c["source"] for c in listing})
    short = [c for c in listing if c.get("short") and c["dropped"]]
    line = (f"**{len(listing)} clips** cut from {sources} recording{'s' * (sources != 1)}: {kept} in the dataset, "
            f"{dropped} left out ({len(short)} short piece{'s' * (len(short) != 1)} of speech no neighbour could take, "
            f"{sum(c['seconds'] for c in short):.2f} s), {person} text{'s' * (person != 1)} by a person")
    if summary:
        asr = (summary.get("asr") or {}).get("model")
        line += f"; dataset sha256 `{str(summary.get('sha256'))[:12]}`" + (f"; recogniser `{asr}`" if asr else "")
    return line


def _ticked(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1")


def _plain(text) -> str:
    return " ".join(str(text if text is not None else "").split())  # as save_review writes it


def decisions(listing: list[dict], rows: list[list]) -> tuple[dict, set]:
    """(new texts {clip audio: text}, clips to drop) from the table as the person left it, against the clips as
    they are now: only what changed. A restored clip (unticked) takes its text cell, or else the recogniser's."""
    by_name = {Path(c["audio"]).name: c for c in listing}
    texts, dropped = {}, set()
    for i, row in enumerate(rows or []):
        name = str(row[0]).strip() if row else ""
        if not name:  # a row added on the page holds no clip
            continue
        c = by_name.get(name)
        if c is None or len(row) <= TEXT:
            raise UserError(f"row {i + 1}: {name!r} is not a clip of this dataset (any more); reload the list", code="app")
        text = _plain(row[TEXT])
        if _ticked(row[DROP]):
            if not c["dropped"]:
                dropped.add(c["audio"])
        elif c["dropped"] or text != _plain(c["text"]):
            text = text or (_plain(c["asr_text"]) if c["dropped"] else "")
            if not text:
                raise UserError(f"{name}: its text is empty; write what is said, or tick drop to leave the clip out", code="app")
            texts[c["audio"]] = text
    return texts, dropped
