"""Transcript sources: the four input layouts read into rows, and the text-level problems of each row.

Layouts: a metadata file of `audio_path|text` rows (upstream's prepare_csv_wavs format, header
optional, read with CSV quoting as upstream reads it), an LJSpeech folder (`metadata.csv` of `id|text|normalized`, audio in `wavs/`), a folder
of audio files each beside a same-named `.txt`, and a folder upstream already prepared (`raw.arrow`).
"""
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .lock.errors import UserError, first_line

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
HEADER_NAMES = {"audio_file", "audio_path", "audio", "path", "file", "filename", "wav", "id"}
FORMATS = ("auto", "csv", "ljspeech", "folder", "upstream")
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # NUL, tab, escape, C1 controls, line separators


@dataclass
class Row:
    where: str  # file:row, or file name, as the report names it
    audio: Path
    text: str
    tokens: Optional[list] = None  # rows of an upstream-prepared folder come tokenized


@dataclass
class Problem:
    where: str
    kind: str  # missing_file, unreadable, empty_audio, non_finite, too_loud, too_short, too_long, silent, empty_text,
    detail: str  # not_utf8, control_char, text_too_long, bad_columns, duplicate; header, quoted (reported, not counted)


@dataclass
class Record:
    line: int  # where the row starts (1-based)
    end: int  # where it ends: a quoted field may hold line breaks
    fields: list  # stripped, as upstream strips them
    text: str  # the row's lines as written


def split_rows(data: bytes, quoted: bool = True, source: str = "the metadata file") -> tuple[list[Record], list]:
    """The non-blank rows of a `|`-separated file, and (line, byte) of each line that is not UTF-8 (left out).

    quoted=True reads them as upstream's prepare_csv_wavs does (Python's csv, delimiter |): a field that starts
    with a quote ends at its closing quote, possibly lines later, and "" inside it is one quote; anything after
    the closing quote is kept. quoted=False splits each line at every | (upstream's LJSpeech reader)."""
    lines, bad = [], []
    for n, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(keepends=True), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            bad.append((n, e.start))
            lines.append(raw[len(raw.rstrip(b"\r\n")):].decode())  # its line end alone: the numbering holds
    if quoted:
        # bytes.splitlines and newline="" cut at the same line ends (\n, \r\n, \r): line_num counts ours
        text = "".join(lines)
        reader, spans, last = csv.reader(io.StringIO(text, newline=""), delimiter="|"), [], 0
        limit = csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # a long text is a row's problem
        try:
            for fields in reader:
                spans.append((last + 1, reader.line_num, fields))
                last = reader.line_num
        except csv.Error as e:
            raise UserError(f"{source}:{last + 1}: {e}; a quote opened there may never close: check the quotes", code="data")
        finally:
            csv.field_size_limit(limit)
    else:
        spans = [(n, n, line.rstrip("\r\n").split("|")) for n, line in enumerate(lines, start=1)]
    return [Record(start, end, [f.strip() for f in fields], "".join(lines[start - 1:end]).rstrip("\r\n"))
            for start, end, fields in spans if any(f.strip() for f in fields)], bad


def format_row(fields) -> str:
    """One row of a metadata file that split_rows reads back as `fields`: plain where that reads the same,
    CSV-quoted where not (a field that starts with a quote, or holds | or a line break)."""
    plain = "|".join(fields)
    if [r.fields for r in split_rows(plain.encode())[0]] == [list(fields)]:
        return plain
    out = io.StringIO()
    csv.writer(out, delimiter="|", lineterminator="").writerow(fields)
    return out.getvalue()


def quoting_note(record: Record, names=("audio", "text")) -> str | None:
    """What CSV quoting changed in a row, against splitting its line at every |; None when nothing, or when the
    row is quoted just as format_row writes its fields (whole fields in quotes, inner quotes doubled: meant)."""
    plain = [c.strip() for c in record.text.split("|")]
    if plain == record.fields or record.text == format_row(record.fields):
        return None
    how = "as upstream's csv reader reads it"
    if record.end > record.line:
        return (f"a quote opened on line {record.line} runs to line {record.end}: the lines read as one row, {how}; "
                "close the quote where the field ends, or double each quote inside a quoted field")
    if len(plain) != len(record.fields):
        return f"{record.text[:80]!r} reads as the columns {record.fields!r}, {how}"
    changed = [f"{name} {a!r} reads as {b!r}" for name, a, b in zip(names, plain, record.fields) if a != b]
    text = plain[1]
    hint = f"; to keep its quotes write the text as {format_row([text])!r}" if text != record.fields[1] else ""
    return f"{', '.join(changed)}, {how}{hint}"


def detect(path: Path) -> str:
    if path.is_file():
        return "csv"
    if not path.is_dir():
        raise UserError(f"input={path}: no such file or folder; give a metadata file or a dataset folder", code="missing")
    if (path / "raw.arrow").is_file():
        return "upstream"
    if (path / "metadata.csv").is_file():
        return "ljspeech" if (path / "wavs").is_dir() else "csv"
    return "folder"


def read_rows(path, fmt: str = "auto") -> tuple[str, list[Row], list[Problem]]:
    path = Path(path).expanduser().resolve()
    fmt = detect(path) if fmt == "auto" else fmt
    if fmt == "csv":
        meta = path / "metadata.csv" if path.is_dir() else path
        rows, problems = _delimited(meta, meta.parent, columns=(2,), audio_of=lambda cols: cols[0])
    elif fmt == "ljspeech":
        # id|text|normalized: the normalized column spells numbers out; some LJSpeech-style sets omit it
        # upstream's LJSpeech reader splits at every | (LJSpeech's texts hold quotes, unescaped)
        rows, problems = _delimited(path / "metadata.csv", path / "wavs", columns=(2, 3), quoted=False,
                                    audio_of=lambda cols: cols[0] + ".wav", text_of=lambda cols: cols[-1] or cols[1])
    elif fmt == "folder":
        rows, problems = _folder(path)
    elif fmt == "upstream":
        rows, problems = _upstream(path)
    else:
        raise UserError(f"format={fmt}: choose one of {', '.join(FORMATS)}", code="range")
    return fmt, _drop_duplicates(_drop_control(rows, problems), problems), problems


def _drop_control(rows: list[Row], problems: list[Problem]) -> list[Row]:
    """Rows whose text holds no control character: a NUL or an escape in a transcript is a broken file."""
    kept = []
    for row in rows:
        found = CONTROL.search(row.text)
        if found:
            problems.append(Problem(row.where, "control_char", f"U+{ord(found.group()):04X} at character "
                                    f"{found.start() + 1} of the text; remove it"))
        else:
            kept.append(row)
    return kept


def _delimited(meta: Path, audio_root: Path, columns, audio_of, text_of=lambda cols: cols[1], quoted=True):
    try:
        data = meta.read_bytes()
    except OSError as e:
        raise UserError(f"{meta}: cannot read ({e.strerror}); give a metadata file of audio_path|text rows", code="io")
    records, bad = split_rows(data, quoted, str(meta))
    problems = [Problem(f"{meta.name}:{n}", "not_utf8", f"byte {at} is not UTF-8; save the file as UTF-8")
                for n, at in bad]
    rows = []
    for i, record in enumerate(records):
        where, cols = f"{meta.name}:{record.line}", record.fields
        if len(cols) not in columns:
            expected = " or ".join(map(str, columns))
            problems.append(Problem(where, "bad_columns", f"{len(cols)} column(s) where {expected} separated by | "
                                    f"are expected: {record.text[:60]!r}"))
            continue
        if i == 0 and cols[0].lower() in HEADER_NAMES:
            problems.append(Problem(where, "header", f"header row {record.text[:60]!r} skipped"))
            continue
        note = quoting_note(record) if quoted else None
        if note:
            problems.append(Problem(where, "quoted", note))
        text = text_of(cols)
        if not cols[0]:
            problems.append(Problem(where, "missing_file", "the audio column is empty"))
        elif not text:
            problems.append(Problem(where, "empty_text", "the text column is empty"))
        else:
            rows.append(Row(where, audio_root / audio_of(cols), text))  # an absolute path stays absolute
    return rows, problems


def _folder(folder: Path):
    rows, problems = [], []
    files = sorted(folder.rglob("*"))  # one walk of the folder for audio and transcripts
    audio = {p.with_suffix(""): p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS}
    for stem, path in audio.items():
        where = str(path.relative_to(folder))
        txt = stem.with_suffix(".txt")
        if not txt.is_file():
            problems.append(Problem(where, "missing_file", f"no transcript {txt.name} beside it"))
            continue
        try:
            text = txt.read_bytes().decode("utf-8-sig").strip()
        except UnicodeDecodeError as e:
            problems.append(Problem(str(txt.relative_to(folder)), "not_utf8",
                                    f"byte {e.start} is not UTF-8; save the transcript as UTF-8"))
            continue
        if not text:
            problems.append(Problem(str(txt.relative_to(folder)), "empty_text", "the transcript is empty"))
            continue
        rows.append(Row(where, path, " ".join(text.split())))  # transcripts may wrap over lines
    for txt in (p for p in files if p.suffix == ".txt"):
        if txt.with_suffix("") not in audio:
            problems.append(Problem(str(txt.relative_to(folder)), "missing_file", "no audio file of the same name"))
    if not audio and not problems:
        raise UserError(f"input={folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) and no metadata.csv or "
                        "raw.arrow; give a folder of audio files with same-named .txt transcripts", code="data")
    return rows, problems


def _upstream(folder: Path):
    """Rows of upstream's raw.arrow (an Arrow stream of audio_path, text, duration), used as they are."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(folder / "raw.arrow")) as source:
            table = pa.ipc.open_stream(source).read_all()
        records = table.select(["audio_path", "text"]).to_pylist()
    except Exception as e:
        raise UserError(f"{folder / 'raw.arrow'}: cannot read ({first_line(e, 100)}); "
                        "prepare the folder again with upstream's tools, or give the original metadata file", code="io")
    rows, problems = [], []
    for n, rec in enumerate(records, start=1):
        where, text = f"raw.arrow:{n}", rec["text"]
        tokens = list(text) if isinstance(text, list) else None  # upstream stores its tokenizer's output
        text = "".join(text) if tokens is not None else (text or "").strip()
        if not text:
            problems.append(Problem(where, "empty_text", "the text is empty"))
        else:
            rows.append(Row(where, Path(rec["audio_path"]), text, tokens))
    return rows, problems


def _drop_duplicates(rows: list[Row], problems: list[Problem]) -> list[Row]:
    """Rows whose audio no earlier row named; the others are reported as duplicates."""
    first, kept = {}, []
    for row in rows:
        key = row.audio.resolve()
        if key in first:
            problems.append(Problem(row.where, "duplicate", f"{row.audio.name} is already used by {first[key]}"))
        else:
            first[key] = row.where
            kept.append(row)
    return kept
