"""Data preparation: the four input layouts, every kind of bad row, reuse, the dataset hash, and what runs do with it."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY, assert_user_error, cli
from make_data import speechlike, write_clips, write_metadata


def prepare(src, out, *extra):
    return cli("finetune.prepare", f"input={src}", f"out={out}", "workers=2", *extra)


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

    from finetune.lock.audio import mel_spectrogram

    mel = dict(target_sample_rate=24000, n_mel_channels=100, hop_length=256, win_length=1024, n_fft=1024,
               mel_spec_type="vocos")
    wav = torch.from_numpy(speechlike(2.3, seed=5))
    assert torch.equal(mel_spectrogram(wav, mel), MelSpec(**mel)(wav.unsqueeze(0))[0])


def test_every_bad_row_is_reported_and_skipped(messy, tmp_path):
    meta, expected = messy
    r = prepare(meta, tmp_path / "ds")
    assert r.returncode == 0, r.stderr[-3000:]
    report = (tmp_path / "ds" / "report.txt").read_text(encoding="utf-8").splitlines()
    for row, kind in expected.items():
        assert any(line.startswith(f"metadata.csv:{row}: {kind}:") for line in report), (row, kind, report)
        assert f"metadata.csv:{row}: {kind}:" in r.stderr
    assert len(report) == len(expected)
    ds = dataset(tmp_path / "ds")
    assert [c["row"] for c in ds["clips"]] == [f"metadata.csv:{n}" for n in (2, 3, 4, 5)]
    counts = {k: v for k, v in ds["summary"]["rows_skipped"].items()}
    assert counts == {kind: 1 for kind in expected.values() if kind != "header"}
    stereo = ds["clips"][3]
    assert abs(stereo["seconds"] - 1.5) < 1e-3 and stereo["frames"] == 1 + 36000 // 256  # 44.1 kHz -> 24 kHz
    assert "skipped: 1 bad_columns, 1 duplicate" in r.stdout


def test_strict_fails_on_bad_rows(messy, tmp_path):
    meta, expected = messy
    r = prepare(meta, tmp_path / "ds", "strict=true")
    assert_user_error(r, "strict=true: 10 bad rows")
    assert "metadata.csv:13: not_utf8" in r.stderr  # every bad row listed above the error line
    assert not (tmp_path / "ds" / "dataset.json").exists()


def test_no_usable_rows_is_an_error(tmp_path):
    (tmp_path / "meta.csv").write_text("gone.wav|Nothing here.\n", encoding="utf-8")
    assert_user_error(prepare(tmp_path / "meta.csv", tmp_path / "ds"), "no usable rows", "1 missing_file")
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
        r = prepare(src, tmp_path / f"ds_{name}")
        assert r.returncode == 0, (name, r.stderr[-2000:])
        ds = dataset(tmp_path / f"ds_{name}")
        assert ds["summary"]["source"]["format"] == name
        found[name] = [(c["audio_sha256"], c["text"], c["frames"]) for c in ds["clips"]]
    assert found["csv"] == found["ljspeech"] == found["folder"] == found["upstream"]
    assert [t for _, t, _ in found["csv"]] == [t for _, t in rows]


def test_rerun_reuses_work_and_the_hash_follows_content(tmp_path):
    rows = write_clips(tmp_path / "src", 4, seed=4)
    meta = write_metadata(tmp_path / "meta.csv", rows)
    assert prepare(meta, tmp_path / "ds").returncode == 0
    first, before = dataset(tmp_path / "ds")["summary"]["sha256"], mel_times(tmp_path / "ds")

    assert prepare(meta, tmp_path / "ds").returncode == 0
    assert dataset(tmp_path / "ds")["summary"]["sha256"] == first
    assert mel_times(tmp_path / "ds") == before  # nothing recomputed

    sf.write(rows[2][0], speechlike(2.0, 24000, 99), 24000)  # one clip changes
    assert prepare(meta, tmp_path / "ds").returncode == 0
    after = mel_times(tmp_path / "ds")
    assert dataset(tmp_path / "ds")["summary"]["sha256"] != first
    assert len(after) == 4 and len(set(after) - set(before)) == 1  # one new mel file, the stale one gone
    assert all(after[k] == before[k] for k in set(after) & set(before))


def test_out_folder_of_another_input_is_refused(tmp_path):
    a = write_metadata(tmp_path / "a.csv", write_clips(tmp_path / "src", 2, seed=5))
    b = write_metadata(tmp_path / "b.csv", write_clips(tmp_path / "src", 2, seed=6))
    assert prepare(a, tmp_path / "ds").returncode == 0
    before = (tmp_path / "ds" / "dataset.json").read_bytes()
    assert_user_error(prepare(b, tmp_path / "ds"), "holds a dataset prepared from")
    assert (tmp_path / "ds" / "dataset.json").read_bytes() == before

    (tmp_path / "a_file").write_text("mine")
    assert_user_error(prepare(a, tmp_path / "a_file"), "is a file")
    assert_user_error(prepare(tmp_path / "src", tmp_path / "src" / "ds"), "lies inside input=")
    # a folder holding only mel/ is taken (a first run cut short); files there it did not write stay
    (tmp_path / "fresh" / "mel").mkdir(parents=True)
    (tmp_path / "fresh" / "mel" / "mine.safetensors").write_text("mine")
    assert prepare(a, tmp_path / "fresh").returncode == 0
    assert (tmp_path / "fresh" / "mel" / "mine.safetensors").read_text() == "mine"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    rows = write_clips(root / "src", 6, seed=8, max_s=3.0)
    rows[1] = (rows[1][0], "Words with ɐ and ¤ symbols, ɐ again.")  # two symbols the shipped vocab lacks
    meta = write_metadata(root / "meta.csv", rows)
    r = prepare(meta, root / "ds")
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "ds"


def tune(root, name, ds, *extra):
    return cli("finetune", "model=f5tts_tiny", f"run.root={root}", f"run.name={name}",
               *[a for a in TINY if not a.startswith("data=")], "data=custom", f"data.path={ds}",
               "data.frames_per_batch=800", *extra)


def test_unknown_symbols_stop_the_run_until_a_choice_is_made(prepared, tmp_path):
    err = assert_user_error(tune(tmp_path, "x", prepared), "2 symbols are not in the vocab", "'ɐ' x2",
                            "'¤' x1", "meta.csv:3", "vocab.extend=true", "vocab.accept_unknown=true")
    assert "\n" not in err.strip().split("error: ", 1)[1]
    assert not (tmp_path / "x").exists()
    r = tune(tmp_path, "accepted", prepared, "vocab.accept_unknown=true", "train.max_updates=1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "map to the unknown token 0" in r.stderr


def test_extended_vocab_round_trips_and_refuses_the_old_vocab(prepared, runs, tmp_path):
    r = tune(tmp_path, "ext", prepared, "vocab.extend=true", f"pretrained={runs['f5']}", "train.max_updates=2")
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "ext"
    import yaml

    manifest = yaml.safe_load((run / "manifest.yaml").read_text(encoding="utf-8"))
    base = (runs["f5"] / "vocab.txt").read_text(encoding="utf-8")
    assert (run / "vocab.txt").read_text(encoding="utf-8") == base + "¤\nɐ\n"
    assert manifest["model"]["vocab"]["extended_from"]["added"] == ["¤", "ɐ"]
    assert manifest["model"]["vocab"]["size"] == len(base.splitlines()) + 2
    assert manifest["data"]["sha256"] == dataset(prepared)["summary"]["sha256"]
    assert manifest["data"]["clips"] == 6

    from finetune.lock.checkpoints import list_checkpoints, load_weights

    last = list_checkpoints(run)[2]
    for weights in ("ema", "online"):
        assert load_weights(last, weights)["transformer.text_embed.text_embed.weight"].shape[0] == len(base.splitlines()) + 3

    out = tmp_path / "ext.wav"
    r = cli("infer", f"run={run}", "gen_text=Say ɐ.", f"out={out}", "nfe_step=2", "vocoder=griffinlim")
    assert r.returncode == 0 and out.exists(), r.stderr[-2000:]
    (run / "vocab.txt").write_text(base, encoding="utf-8")  # someone puts the pretrained vocab back
    assert_user_error(cli("infer", f"run={run}", "gen_text=Hi.", f"out={tmp_path / 'no.wav'}", "nfe_step=2",
                          "vocoder=griffinlim"), "vocab")


def test_growing_keeps_old_rows_bit_identical(runs):
    from finetune.lock.builder import build_model, model_spec
    from finetune.lock.checkpoints import list_checkpoints, load_weights
    from finetune.lock.manifest import read_manifest
    from finetune.runs import load_pretrained
    from finetune.lock.vocab import EMBED, read_vocab

    vocab, _ = read_vocab(runs["f5"] / "vocab.txt")
    cfg = read_manifest(runs["f5"])["config"]["model"]
    model = build_model(spec := model_spec(cfg, vocab + ["ɐ", "¤", "ʘ"]), vocab + ["ɐ", "¤", "ʘ"])
    load_pretrained(model, spec, str(runs["f5"]), "f5tts_tiny", grow=3, seed=11)
    source = load_weights(list_checkpoints(runs["f5"])[max(list_checkpoints(runs["f5"]))], "ema")
    grown = model.state_dict()
    assert torch.equal(grown[EMBED][: len(vocab) + 1], source[EMBED])
    assert torch.equal(grown[EMBED][len(vocab) + 1:], torch.randn(3, source[EMBED].shape[1],
                                                                   generator=torch.Generator().manual_seed(11)))
    assert all(torch.equal(grown[k], v) for k, v in source.items() if k != EMBED)


def test_runs_refuse_other_mel_settings_and_a_small_frame_budget(prepared, tmp_path):
    r = prepare(dataset(prepared)["summary"]["source"]["input"], tmp_path / "ds80", "model.mel.n_mel_channels=80")
    assert r.returncode == 0, r.stderr[-2000:]
    assert_user_error(tune(tmp_path, "m", tmp_path / "ds80", "vocab.accept_unknown=true"),
                      "other mel settings", "n_mel_channels: 80 -> 100")
    longest = dataset(prepared)["summary"]["longest_frames"]
    assert_user_error(tune(tmp_path, "b", prepared, "data.frames_per_batch=100", "vocab.accept_unknown=true"),
                      "data.frames_per_batch=100 is smaller than the longest clip", f"{longest} frames")
    assert not (tmp_path / "m").exists() and not (tmp_path / "b").exists()


def test_resume_refuses_a_changed_dataset(prepared, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(prepared, ds)
    r = tune(tmp_path, "r", ds, "vocab.accept_unknown=true", "train.max_updates=1")
    assert r.returncode == 0, r.stderr[-2000:]
    data = dataset(ds)
    data["clips"] = data["clips"][:-1]
    data["summary"]["sha256"] = "f" * 64
    (ds / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    assert_user_error(cli("finetune", f"resume={tmp_path / 'r'}", "train.max_updates=2"),
                      "dataset at data.path changed since the run started")


def test_custom_data_without_a_path_is_one_line(tmp_path):
    r = cli("finetune", "model=f5tts_tiny", f"run.root={tmp_path}", "data=custom", "pretrained=null")
    assert_user_error(r, "data.path= is required")
