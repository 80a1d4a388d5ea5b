"""Data preparation: the four input layouts, every kind of bad row, reuse, the dataset hash, and what runs do with it."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from finetune.lock.errors import UserError
from tests.conftest import cli
from bench.makers import speechlike, write_clips, write_metadata
from tests.test_runs_data import prepare


def dataset(out) -> dict:
    return json.loads((Path(out) / "dataset.json").read_text(encoding="utf-8"))


def mel_times(out) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (Path(out) / "mel").iterdir()}


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A metadata file with one row of each kind of problem, and the kind each row should be reported as."""
    root = tmp_path_factory.mktemp("messy")
    good = write_clips(root, 3, seed=7)
    wavs = root / "wavs"
    sf.write(wavs / "stereo_44k.wav", np.stack([speechlike(1.5, 44100, 1), speechlike(1.5, 44100, 2)], 1), 44100)
    (wavs / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 8)
    sf.write(wavs / "empty.wav", np.zeros(0, np.float32), 24000)
    sf.write(wavs / "short.wav", speechlike(0.1, 24000, 3), 24000)
    sf.write(wavs / "long.wav", speechlike(31, 8000, 4), 8000)
    sf.write(wavs / "silent.wav", np.zeros(24000, np.float32), 24000)
    lines = [b"audio_file|text"] + [f"{a}|{t}".encode() for a, t in good] + [
        b"wavs/stereo_44k.wav|A stereo clip at forty four kilohertz.",
        b"wavs/missing.wav|Nobody recorded this one.",
        b"wavs/corrupt.wav|The bytes are not audio.",
        b"wavs/empty.wav|No samples at all.",
        b"wavs/short.wav|Too short.",
        b"wavs/long.wav|Far too long for a training clip.",
        b"wavs/silent.wav|Only silence here.",
        b"wavs/clip_00000.wav|",
        b"wavs/clip_00001.wav|caf\xe9 in latin-1",
        b"wavs/clip_00002.wav\ttab instead of a bar",
        f"{good[0][0]}|The same file again.".encode(),
    ]
    (root / "metadata.csv").write_bytes(b"\n".join(lines) + b"\n")
    expected = {1: "header", 6: "missing_file", 7: "unreadable", 8: "empty_audio", 9: "too_short", 10: "too_long",
                11: "silent", 12: "empty_text", 13: "not_utf8", 14: "bad_columns", 15: "duplicate"}
    return root / "metadata.csv", expected


def test_our_mel_is_upstreams_mel():
    from f5_tts.model.modules import MelSpec

    from finetune.media.audio import mel_spectrogram

    mel = dict(target_sample_rate=24000, n_mel_channels=100, hop_length=256, win_length=1024, n_fft=1024,
               mel_spec_type="vocos")
    wav = torch.from_numpy(speechlike(2.3, seed=5))
    assert torch.equal(mel_spectrogram(wav, mel), MelSpec(**mel)(wav.unsqueeze(0))[0])


def test_every_bad_row_is_reported_and_skipped(messy, tmp_path, capsys):
    meta, expected = messy
    prepare(meta, tmp_path / "ds")
    out, err = capsys.readouterr()
    report = (tmp_path / "ds" / "report.txt").read_text(encoding="utf-8").splitlines()
    for row, kind in expected.items():
        assert any(line.startswith(f"metadata.csv:{row}: {kind}:") for line in report), (row, kind, report)
        assert f"metadata.csv:{row}: {kind}:" in err
    assert len(report) == len(expected)
    ds = dataset(tmp_path / "ds")
    assert [c["row"] for c in ds["clips"]] == [f"metadata.csv:{n}" for n in (2, 3, 4, 5)]
    counts = {k: v for k, v in ds["summary"]["rows_skipped"].items()}
    assert counts == {kind: 1 for kind in expected.values() if kind != "header"}
    stereo = ds["clips"][3]
    assert abs(stereo["seconds"] - 1.5) < 1e-3 and stereo["frames"] == 1 + 36000 // 256  # 44.1 kHz -> 24 kHz
    assert "skipped: 1 bad_columns, 1 duplicate" in out


def test_strict_fails_on_bad_rows(messy, tmp_path, capsys):
    meta, expected = messy
    with pytest.raises(UserError, match="strict=true: 10 bad rows"):
        prepare(meta, tmp_path / "ds", "strict=true")
    assert "metadata.csv:13: not_utf8" in capsys.readouterr().err  # every bad row listed above the error
    assert not (tmp_path / "ds" / "dataset.json").exists()


def test_no_usable_rows_is_an_error(tmp_path):
    (tmp_path / "meta.csv").write_text("gone.wav|Nothing here.\n", encoding="utf-8")
    with pytest.raises(UserError, match="no usable rows.*1 missing_file"):
        prepare(tmp_path / "meta.csv", tmp_path / "ds")
    assert not (tmp_path / "ds" / "dataset.json").exists()


def test_four_input_layouts_give_the_same_clips(tmp_path):
    rows = write_clips(tmp_path / "src", 4, seed=3)
    write_metadata(tmp_path / "meta.csv", rows, header=False)
    lj = tmp_path / "lj"  # LJSpeech: id|text|normalized; the normalized column is the one used
    shutil.copytree(tmp_path / "src" / "wavs", lj / "wavs")
    (lj / "metadata.csv").write_text("".join(f"{a.stem}|raw {i}|{t}\n" for i, (a, t) in enumerate(rows)), "utf-8")
    folder = tmp_path / "folder"
    shutil.copytree(tmp_path / "src" / "wavs", folder)
    for audio, text in rows:
        (folder / f"{audio.stem}.txt").write_text(text + "\n", encoding="utf-8")
    up = tmp_path / "up"  # upstream's own preparation of the same rows
    write_metadata(tmp_path / "meta_header.csv", rows)
    r = cli("f5_tts.train.datasets.prepare_csv_wavs", str(tmp_path / "meta_header.csv"), str(up), "--pretrain")
    assert r.returncode == 0, r.stderr[-2000:]

    found = {}
    for name, src in [("csv", tmp_path / "meta.csv"), ("ljspeech", lj), ("folder", folder), ("upstream", up)]:
        prepare(src, tmp_path / f"ds_{name}")
        ds = dataset(tmp_path / f"ds_{name}")
        assert ds["summary"]["source"]["format"] == name
        found[name] = [(c["audio_sha256"], c["text"], c["frames"]) for c in ds["clips"]]
    assert found["csv"] == found["ljspeech"] == found["folder"] == found["upstream"]
    assert [t for _, t, _ in found["csv"]] == [t for _, t in rows]


def test_rerun_reuses_work_and_the_hash_follows_content(tmp_path):
    rows = write_clips(tmp_path / "src", 4, seed=4)
    meta = write_metadata(tmp_path / "meta.csv", rows)
    prepare(meta, tmp_path / "ds")
    first, before = dataset(tmp_path / "ds")["summary"]["sha256"], mel_times(tmp_path / "ds")

    prepare(meta, tmp_path / "ds")
    assert dataset(tmp_path / "ds")["summary"]["sha256"] == first
    assert mel_times(tmp_path / "ds") == before  # nothing recomputed

    sf.write(rows[2][0], speechlike(2.0, 24000, 99), 24000)  # one clip changes
    prepare(meta, tmp_path / "ds")
    after = mel_times(tmp_path / "ds")
    assert dataset(tmp_path / "ds")["summary"]["sha256"] != first
    assert len(after) == 4 and len(set(after) - set(before)) == 1  # one new mel file, the stale one gone
    assert all(after[k] == before[k] for k in set(after) & set(before))


def test_out_folder_of_another_input_is_refused(tmp_path):
    a = write_metadata(tmp_path / "a.csv", write_clips(tmp_path / "src", 2, seed=5))
    b = write_metadata(tmp_path / "b.csv", write_clips(tmp_path / "src", 2, seed=6))
    prepare(a, tmp_path / "ds")
    before = (tmp_path / "ds" / "dataset.json").read_bytes()
    with pytest.raises(UserError, match="holds a dataset prepared from"):
        prepare(b, tmp_path / "ds")
    assert (tmp_path / "ds" / "dataset.json").read_bytes() == before

    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(UserError, match="is a file"):
        prepare(a, tmp_path / "a_file")
    with pytest.raises(UserError, match="lies inside input="):
        prepare(tmp_path / "src", tmp_path / "src" / "ds")
    # a folder holding only mel/ is taken (a first run cut short); files there it did not write stay
    (tmp_path / "fresh" / "mel").mkdir(parents=True)
    (tmp_path / "fresh" / "mel" / "mine.safetensors").write_text("mine")
    prepare(a, tmp_path / "fresh")
    assert (tmp_path / "fresh" / "mel" / "mine.safetensors").read_text() == "mine"
