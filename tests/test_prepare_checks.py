"""What prepare refuses (issue 11): non-finite or absurdly loud audio, text that cannot belong to its clip,
control characters, numbers out of range, an out= it cannot write, and a second preparation into a folder
that one is already writing."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import assert_user_error, cli
from finetune.lock.errors import UserError
from finetune.lock.files import FolderLock
from finetune.prepare import prepare
from bench.makers import speechlike, write_clips, write_metadata
from test_raw import config


def report(out) -> dict:
    """{row number: kind} of report.txt."""
    found = {}
    for line in (Path(out) / "report.txt").read_text(encoding="utf-8").splitlines():
        where, kind, _ = line.split(": ", 2)
        found[int(where.rsplit(":", 1)[1])] = kind
    return found


def kept_rows(out) -> list[int]:
    ds = json.loads((Path(out) / "dataset.json").read_text(encoding="utf-8"))
    return [int(c["row"].rsplit(":", 1)[1]) for c in ds["clips"]]


def test_non_finite_and_absurdly_loud_audio_are_refused(tmp_path):
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    rows = []
    for name, change in [("good", None), ("inf", ("set", np.inf)), ("nan", ("set", np.nan)),
                         ("loud", ("scale", 100.0)), ("hot", ("scale", 1.5))]:
        y = speechlike(2.0, 24000, seed=len(rows))
        if change and change[0] == "set":
            y[5000] = change[1]
        elif change:
            y = y / np.abs(y).max() * change[1]  # a float file far over full scale (+40 dBFS), and one a little over
        sf.write(wavs / f"{name}.wav", y, 24000, subtype="FLOAT")
        rows.append((wavs / f"{name}.wav", f"The {name} clip."))
    out = prepare(config(write_metadata(tmp_path / "meta.csv", rows), tmp_path / "ds"))
    assert report(out) == {1: "header", 3: "non_finite", 4: "non_finite", 5: "too_loud"}
    assert kept_rows(out) == [2, 6]  # +3.5 dBFS is under loud_db=6: kept
    assert "peak +40.0 dBFS is over loud_db=6.0" in (out / "report.txt").read_text(encoding="utf-8")


def test_text_too_long_for_its_clip_and_control_characters_are_refused(tmp_path):
    (a, _), (b, _), (c, _), (d, _), (e, _) = write_clips(tmp_path, 5, seed=2, min_s=2.5, max_s=3.0)
    sf.write(e, speechlike(0.5, 24000, 9), 24000)
    rows = [(a, "A clip of under three seconds."),
            (b, "x" * 1_000_000),  # a megabyte of text on a 3 s clip
            (c, "A NUL\x00 inside."),
            (d, "An escape \x1b[31m sequence."),
            (e, "Forty characters are fine on a short one")]  # under 1 s: the limit is that of 1 s
    out = prepare(config(write_metadata(tmp_path / "meta.csv", rows), tmp_path / "ds"))
    assert report(out) == {1: "header", 3: "text_too_long", 4: "control_char", 5: "control_char"}
    assert kept_rows(out) == [2, 6]
    text = (out / "report.txt").read_text(encoding="utf-8")
    assert "1000000 characters for" in text and "U+0000 at character 6" in text and "U+001B" in text


@pytest.mark.parametrize("change, needle", [
    ({"min_seconds": 0.0}, "min_seconds=0.0: must be above 0"),
    ({"max_seconds": 0.2}, "max_seconds=0.2: must be more than min_seconds=0.3"),
    ({"workers": -2}, "workers=-2: must be above 0"),
    ({"workers": 0}, "workers=0: must be above 0"),
    ({"silence_db": float("nan")}, "silence_db=nan: must be a finite number"),
    ({"loud_db": -70.0}, "loud_db=-70.0: must be more than silence_db=-60.0"),
    ({"max_chars_per_second": float("inf")}, "max_chars_per_second=inf: must be a finite number"),
    ({"max_chars_per_second": 0.0}, "max_chars_per_second=0.0: must be above 0"),
    ({"slice": {"min_seconds": 0.0}}, "slice.min_seconds=0.0: must be above 0"),
    ({"slice": {"max_seconds": 0.5}}, "slice.max_seconds=0.5: must be more than slice.min_seconds=1.0"),
    ({"max_seconds": 20.0, "slice": {"max_seconds": 25.0}}, "slice.max_seconds=25.0: must be at most max_seconds=20.0"),
    ({"max_seconds": 40.0, "slice": {"max_seconds": 35.0}}, "slice.max_seconds=35.0: must be at most 30"),
    ({"slice": {"silence_db": 0.0}}, "slice.silence_db=0.0: must be below 0"),
    ({"slice": {"min_silence": 0.0}}, "slice.min_silence=0.0: must be above 0"),
    ({"slice": {"pad": -0.1}}, "slice.pad=-0.1: must be at least 0"),
    ({"asr": {"batch_size": 0}}, "asr.batch_size=0: must be above 0"),
    ({"slice": {"detector": "silero"}}, "slice.detector='silero': must be one of energy, vad"),
    ({"loudness": {"target_lufs": 3.0}}, "loudness.target_lufs=3.0: must be below 0"),
    ({"loudness": {"peak_db": 0.5}}, "loudness.peak_db=0.5: must be at most 0"),
    ({"quality": {"model": "dnsmos"}}, "quality.model='dnsmos': must be one of distillmos"),
    ({"quality": {"device": "cuda:x"}}, "quality.device=cuda:x: not a device"),
    ({"filter": {"min_quality": 6.0}}, "filter.min_quality=6.0: must be at most 5"),
    ({"quality": {"model": None}, "filter": {"min_quality": 3.0}}, "filter.min_quality=3.0: needs quality scores"),
    ({"out": ""}, "out='': must not be empty"),
])
def test_numbers_out_of_range_are_refused_before_anything_is_written(tmp_path, change, needle):
    cfg = config(write_metadata(tmp_path / "meta.csv", write_clips(tmp_path, 1, seed=1)), tmp_path / "ds")
    for key, value in change.items():
        cfg[key] = cfg[key] | value if isinstance(value, dict) else value
    with pytest.raises(UserError) as e:
        prepare(cfg)
    assert str(e.value).startswith(needle), str(e.value)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("where, reason", [("a_file/ds", "Not a directory"), ("x" * 300, "File name too long"),
                                           ("/sys/f5tune-prepare", "Operation not permitted")])
def test_an_out_that_cannot_be_written_is_one_line_naming_it(tmp_path, where, reason):
    (tmp_path / "a_file").write_text("mine")
    out = tmp_path / where
    with pytest.raises(UserError, match=f"^out={out}: cannot write there \\({reason}\\)"):
        prepare(config(write_metadata(tmp_path / "meta.csv", write_clips(tmp_path, 1, seed=1)), out))
    assert (tmp_path / "a_file").read_text() == "mine"


def test_the_folder_is_locked_for_the_whole_preparation(tmp_path, monkeypatch):
    import finetune.prepare as module
    from finetune.lock.files import holder

    cfg = config(write_metadata(tmp_path / "meta.csv", write_clips(tmp_path, 2, seed=3)), tmp_path / "ds")
    seen, real = [], module.process_all
    monkeypatch.setattr(module, "process_all", lambda *a: seen.append(holder(tmp_path / "ds")) or real(*a))
    prepare(cfg)
    assert seen and seen[0].startswith("pid ") and holder(tmp_path / "ds") is None

    # a second preparation, another process, while this one holds the folder: refused, nothing touched
    def files():
        return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*") if p.name != ".lock"}

    before = files()
    with FolderLock(tmp_path / "ds", "prepare"):
        r = cli("finetune.prepare", f"input={tmp_path / 'meta.csv'}", f"out={tmp_path / 'ds'}")
    err = assert_user_error(r, f"{tmp_path / 'ds'} is in use by pid ", "prepare needs it alone")
    assert r.returncode == 2 and len(err.strip().splitlines()) == 1
    assert files() == before
