"""What a review page calls for a dataset prepared from recordings (transcribe=true):

  review_clips(folder) -> [clip]       every clip cut from the recordings, in order, with its text
  save_review(folder, texts, dropped)  a person's new texts and dropped clips written into the folder's
                                       metadata.csv, then the dataset prepared again (mel, clips and
                                       transcripts reused; the recogniser is not run for these clips)

A clip is named by its audio path, as metadata.csv and dataset.json name it. A new text for a dropped
clip brings it back, as it does a short piece no neighbour could take and a clip under filter.min_quality (which
then stays in whatever its score). The preparation's settings are those of the last run, kept in clips.json; it runs
in the calling process without forking, holding the folder's lock (a second writer is refused).
"""
from pathlib import Path

from .lock.errors import UserError
from .lock.files import sha256_file


def _folder(folder) -> tuple[Path, dict]:
    from .recordings import read_state

    folder = Path(folder).expanduser().resolve()
    state = read_state(folder)
    if not state:
        raise UserError(f"{folder}: not prepared from recordings (no clips.json); prepare it with transcribe=true, "
                        "or edit the metadata file it was prepared from", code="data")
    return folder, state


def review_clips(folder) -> list[dict]:
    """Per clip: audio, source, start, end, seconds, text (None when dropped), asr_text (the recogniser's),
    text_by ("asr" | "person" | None when dropped), dropped (left out: by a person, as a short piece no neighbour
    could take, or under filter.min_quality), short, quality (its score, or None), in_dataset, problem (the
    report's reason or None)."""
    from .media.dataset import read_dataset
    from .quality import read_cache as read_scores
    from .recordings import METADATA, read_metadata
    from .transcribe import read_cache

    folder, state = _folder(folder)
    rows, lines = read_metadata(folder / METADATA, with_lines=True) or ({}, {})
    ds = read_dataset(folder) if (folder / "dataset.json").is_file() else {"summary": {}, "clips": []}
    kept = {c["audio"]: c for c in ds["clips"]}
    reasons = {}
    try:
        for line in (folder / "report.txt").read_text(encoding="utf-8").splitlines():
            where, _, reason = line.partition(": ")
            reasons[where] = reason
    except FileNotFoundError:
        pass
    heard, key = read_cache(folder), state["recogniser"]["key"]
    predictor = (ds["summary"].get("quality") or {}).get("weights_sha256")
    scored = read_scores(folder, predictor) if predictor else {}
    out = []
    for c in state["clips"]:
        audio, text = c["audio"], rows.get(c["audio"])
        sha = kept[audio]["audio_sha256"] if audio in kept else (sha256_file(audio) if Path(audio).is_file() else None)
        problem = reasons.get(f"{METADATA}:{lines.get(audio)}") if text is not None else \
            reasons.get(Path(audio).name) if c.get("short") else None
        out.append({
            "audio": audio, "source": c["source"], "start": c["start"], "end": c["end"],
            "seconds": round(c["end"] - c["start"], 3), "text": text,
            "asr_text": heard.get((sha, key), c["written"]),
            "text_by": None if text is None else ("asr" if text == c["written"] else "person"),
            "dropped": text is None or (problem or "").startswith("low_quality:"), "short": bool(c.get("short")),
            "quality": kept[audio].get("quality") if audio in kept else scored.get(sha),
            "in_dataset": audio in kept, "problem": problem,
        })
    return out


def save_review(folder, texts: dict, dropped) -> Path:
    """Write a person's `texts` ({clip audio path: text}) and `dropped` (clip audio paths) into metadata.csv
    and prepare the dataset again with the settings of its last preparation. Returns the dataset folder."""
    from omegaconf import OmegaConf

    from .config import plain
    from .prepare import prepare
    from .prepare_schema import PrepareConfig
    from .recordings import Review

    folder, state = _folder(folder)
    cfg = state.get("config")
    if not isinstance(cfg, dict) or "${" in repr(cfg):  # never resolve an interpolation read from a file
        raise UserError(f"{folder / 'clips.json'}: its settings are not this tool's; prepare the folder again "
                        "with python -m finetune.prepare transcribe=true", code="data")
    try:
        cfg = plain(OmegaConf.create(cfg), PrepareConfig)
    except UserError as e:
        raise UserError(f"{folder / 'clips.json'}: {e}", code="data")
    if Path(cfg["out"]).resolve() != folder:
        raise UserError(f"{folder} was prepared as out={cfg['out']} (moved since?); prepare it again where it is", code="data")
    # one process: no fork inside a web server's threads (the few mel it may need, for restored clips, are quick)
    return prepare(cfg | {"workers": 1}, Review({str(k): str(v) for k, v in texts.items()}, {str(d) for d in dropped}))
