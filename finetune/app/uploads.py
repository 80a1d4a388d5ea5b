"""Training audio uploaded from the browser: files (audio, transcripts, metadata) or zips of them, stored in a new
folder under data_root for python -m finetune.prepare to read. Every uploaded file must lie in Gradio's upload
folder; zip members are written only under that folder (no absolute paths, no `..`, no links), of the kinds
prepare reads, within a size limit that counts what is written, not what the zip declares."""
import re
import shutil
import zipfile
from pathlib import Path

from finetune.lock.errors import UserError

from .paths import Roots

AUDIO = (".wav", ".flac", ".ogg", ".mp3")
TEXT = (".txt", ".csv", ".tsv", ".list")
LIMIT_BYTES = 2 * 1024 ** 3  # per upload, unpacked
LIMIT_FILES = 100_000


def folder_name(text) -> str:
    name = str(text or "").strip()
    if not re.fullmatch(r"[\w][\w .+-]*", name) or name in (".", ".."):
        raise UserError(f"upload folder {name!r}: give one folder name (letters, digits, space, . _ + -), "
                        "made under data_root", code="app")
    return name


def _kind_ok(name: str) -> bool:
    return name.lower().endswith(AUDIO + TEXT)


def _copy(source, target: Path, budget: list[int]) -> None:
    """Copy a stream into a new file, counting its bytes against the upload's limit."""
    with open(target, "xb") as out:
        while True:
            block = source.read(1 << 20)
            if not block:
                return
            budget[0] -= len(block)
            if budget[0] < 0:
                raise UserError(f"the upload is over the limit of {LIMIT_BYTES / 1024 ** 3:.0f} GB unpacked", code="app")
            out.write(block)


def _unzip(archive: Path, target: Path, budget: list[int], written: list[Path]) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{archive.name}: not a readable zip ({e})", code="app")
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > LIMIT_FILES:
            raise UserError(f"{archive.name}: {len(members)} files, over the limit of {LIMIT_FILES}", code="app")
        for m in members:
            parts = Path(m.filename.replace("\\", "/")).parts
            if m.filename.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", m.filename):
                raise UserError(f"{archive.name}: {m.filename!r} would be written outside its folder; refused", code="app")
            if (m.external_attr >> 16) & 0o170000 == 0o120000:
                raise UserError(f"{archive.name}: {m.filename!r} is a link; refused", code="app")
            if parts[0] == "__MACOSX" or parts[-1].startswith("._") or not _kind_ok(parts[-1]):
                continue  # neither audio nor text: not for prepare
            dest = target.joinpath(*parts)  # no `..`, not absolute, in a folder made here: under target
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as source:
                _copy(source, dest, budget)
            written.append(dest)


def store(roots: Roots, files: list, name) -> tuple[Path, list[Path]]:
    """Uploaded files into data_root/<name> (a new folder); zips unpacked there. Returns the folder and the
    files written. A refusal removes the folder again: nothing half-written stays."""
    if not files:
        raise UserError("choose the files to upload first (audio files with same-named .txt transcripts, a "
                        "metadata file, recordings to transcribe, or a .zip of them)", code="app")
    target = roots.confine(folder_name(name), "upload folder", roots=(roots.data,))
    if target.exists():
        raise UserError(f"{target} exists already; give a new folder name (an upload never mixes into a folder)", code="app")
    sources = []
    for f in files:
        path = Path(getattr(f, "name", f))
        sources.append(roots.confine(str(path), "upload", roots=(roots.uploads,)))
    target.mkdir(parents=True)
    written, budget = [], [LIMIT_BYTES]
    try:
        for source in sources:
            if source.suffix.lower() == ".zip":
                _unzip(source, target, budget, written)
            elif _kind_ok(source.name):
                dest = target / source.name
                if dest.exists():
                    raise UserError(f"{source.name}: uploaded twice", code="app")
                with open(source, "rb") as f:
                    _copy(f, dest, budget)
                written.append(dest)
            else:
                raise UserError(f"{source.name}: neither audio ({', '.join(AUDIO)}), text ({', '.join(TEXT)}) "
                                "nor a .zip of them", code="app")
        if not any(p.suffix.lower() in AUDIO for p in written):
            raise UserError("the upload holds no audio file (" + ", ".join(AUDIO) + ")", code="app")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target, written


def describe(target: Path, written: list[Path], data_root: Path) -> str:
    audio = sum(1 for p in written if p.suffix.lower() in AUDIO)
    texts = sum(1 for p in written if p.suffix.lower() in TEXT)
    size = sum(p.stat().st_size for p in written)
    return (f"uploaded into {target} ({target.relative_to(data_root)} under data_root): {audio} audio file(s), "
            f"{texts} text file(s), {size / 1e6:.1f} MB")
