"""From raw recordings to a dataset: slicing at silences, a tiny Whisper through the real pipeline, re-runs
that reuse everything, a person's edits and drops that survive, and the review functions."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from finetune.config import plain, register
from finetune.lock.errors import UserError
from finetune.prepare import prepare
from finetune.prepare_schema import PrepareConfig
from finetune.slicing import find_clips
from bench.makers import speechlike, write_tiny_whisper

CONF = Path(__file__).resolve().parents[1] / "conf"
register()

SLICE = {"min_seconds": 1.0, "max_seconds": 10.0, "silence_db": -40.0, "min_silence": 0.3, "pad": 0.0}


def config(src, out, *overrides) -> dict:
    """The prepare config the command line would give, composed by Hydra from conf/prepare.yaml."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=[f"input={src}", f"out={out}", "workers=1",
                                                        "slice.min_seconds=1", *overrides])
    return plain(cfg, PrepareConfig)


def dataset(out) -> dict:
    return json.loads((Path(out) / "dataset.json").read_text(encoding="utf-8"))


def tone(seconds, sr, level=0.5):
    t = np.arange(int(round(seconds * sr))) / sr
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds, sr):
    return np.zeros(int(round(seconds * sr)), np.float32)


# ---- slicing -------------------------------------------------------------------------------------

def seconds(spans, sr):
    return [(round(a / sr, 2), round(b / sr, 2)) for a, b in spans]


@pytest.mark.parametrize("sr", [16000, 44100])
def test_slicing_cuts_at_the_known_silences(sr):
    # speech at 1-3 s, 4-8 s and 8.2-9.2 s (a 0.2 s pause, under min_silence), 10.7-11.2 s (alone, too short)
    y = np.concatenate([silence(1, sr), tone(2, sr), silence(1, sr), tone(4, sr), silence(0.2, sr), tone(1, sr),
                        silence(1.5, sr), tone(0.5, sr), silence(1, sr)])
    hop = 0.01 * sr
    spans, short = find_clips(y, sr, SLICE)
    assert len(spans) == 2 and short == []
    # the 0.5 s piece at the end joins the clip before it (4-11.2 s is within max_seconds=10)
    for (a, b), (start, end) in zip(spans, [(1, 3), (4, 11.2)]):
        assert abs(a - start * sr) <= hop and abs(b - end * sr) <= hop, (a / sr, b / sr)

    spans, _ = find_clips(y, sr, SLICE | {"pad": 0.1})  # padding widens each side, within the recording
    assert abs(spans[0][0] - 0.9 * sr) <= hop and abs(spans[1][1] - 11.3 * sr) <= hop
    # a clip ends at the first pause after min_seconds: with 2.5 s the 2 s stretch takes the next one in; the 0.5 s
    # piece would make that clip 10.2 s, over max_seconds, and has no other neighbour: it is left out
    spans, short = find_clips(y, sr, SLICE | {"min_seconds": 2.5})
    assert len(spans) == 1 and abs(spans[0][0] - 1 * sr) <= hop and abs(spans[0][1] - 9.2 * sr) <= hop
    assert [(b - a) / sr for a, b in short] == [pytest.approx(0.5, abs=0.01)]
    # unless that makes it longer than max_seconds (8.2 s > 6 s): the 2 s stretch is then left out as too short
    spans, short = find_clips(y, sr, SLICE | {"min_seconds": 2.5, "max_seconds": 6})
    assert len(spans) == 1 and abs(spans[0][0] - 4 * sr) <= hop and abs(spans[0][1] - 9.2 * sr) <= hop
    assert [(b - a) / sr for a, b in short] == [pytest.approx(2.0, abs=0.01), pytest.approx(0.5, abs=0.01)]


def test_a_short_last_sentence_joins_the_clip_before_it():
    """The issue's recording: six sentences, the last one under slice.min_seconds=3 even padded. The forward pass
    closes each clip at its first pause after 3 s, so the last sentence had no clip to join and was lost."""
    sr = 16000
    lengths = [4.1, 5.2, 3.4, 4.6, 4.3, 2.6]
    parts, starts, t = [silence(0.5, sr)], [], 0.5
    for i, n in enumerate(lengths):
        parts += [speechlike(n, sr, seed=i), silence(0.6, sr)]
        starts.append(t)
        t += n + 0.6
    y = np.concatenate(parts)
    s = SLICE | {"min_seconds": 3.0, "max_seconds": 15.0, "pad": 0.1}
    spans, short = find_clips(y, sr, s)
    assert short == []
    assert len(spans) == 5 and abs(spans[-1][0] / sr - (starts[4] - 0.1)) < 0.1  # the 4.3 s sentence and the last
    assert abs(spans[-1][1] / sr - (starts[5] + 2.6 + 0.1)) < 0.1, seconds(spans, sr)
    # a neighbour that would pass max_seconds cannot take it: then it is left out, and said to be
    spans, short = find_clips(y, sr, s | {"max_seconds": 7.0})
    assert len(spans) == 5 and len(short) == 1 and abs(short[0][1] / sr - (starts[5] + 2.7)) < 0.1


def test_speech_with_no_pause_longer_than_max_seconds_is_cut_to_fit():
    sr = 24000
    y = speechlike(47, sr, seed=3)  # syllable gaps of ~0.1 s: no pause of min_silence anywhere
    s = SLICE | {"min_seconds": 4.0, "max_seconds": 9.0, "pad": 0.1}
    spans, short = find_clips(y, sr, s)
    lengths = [(b - a) / sr for a, b in spans]
    assert len(spans) >= 6 and all(4.0 <= n <= 9.0 for n in lengths), lengths
    assert not short
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))  # cut, not padded: nothing lost
    assert spans[0][0] <= 0.02 * sr and spans[-1][1] >= y.size - 0.02 * sr
    for _, b in spans[:-1]:  # each cut at a quiet point: under the stretch's median loudness
        frame = np.abs(y[b - 240:b + 240]).mean()
        assert frame < np.median(np.abs(y)), b / sr


# ---- recordings to a dataset ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    return write_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


def talk(sr, seeds, pause=0.8):
    parts = [silence(0.4, sr)]
    for seconds, seed in seeds:
        parts += [speechlike(seconds, sr, seed), silence(pause, sr)]
    return np.concatenate(parts)


def write_recordings(folder) -> Path:
    """Recordings at four rates, mono and stereo, wav/flac/ogg/mp3, with one corrupt and one holding NaN."""
    folder.mkdir(parents=True, exist_ok=True)
    y = talk(44100, [(2.5, 1), (3.0, 2)])
    sf.write(folder / "stereo_44k.flac", np.stack([y, 0.8 * y], 1), 44100)
    sf.write(folder / "mono_16k.ogg", talk(16000, [(2.2, 3), (2.8, 4)]), 16000)
    (folder / "deep").mkdir()
    sf.write(folder / "deep" / "mono_24k.wav", talk(24000, [(3.0, 5)]), 24000)
    sf.write(folder / "mono_22k.mp3", talk(22050, [(2.6, 10)]), 22050, format="MP3")
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 8)
    bad = talk(24000, [(2.0, 6)])
    bad[1000] = np.nan
    sf.write(folder / "nan.wav", bad, 24000, subtype="FLOAT")
    return folder


def test_recordings_become_a_dataset_with_provenance(whisper, tmp_path):
    src = write_recordings(tmp_path / "recs")
    out = prepare(config(src, tmp_path / "ds", "transcribe=true", f"asr.model={whisper}", "asr.batch_size=2",
                         "workers=null"))  # one worker process per core
    ds = dataset(out)
    summary = ds["summary"]
    assert summary["source"] == {"input": str(src), "format": "recordings", "metadata": str(out / "metadata.csv")}
    assert summary["asr"] == {"model": str(whisper), "revision": None, "language": None, "weights_sha256":
                              hashlib.sha256((whisper / "model.safetensors").read_bytes()).hexdigest()}
    assert summary["text_by"] == {"asr": 6} and summary["clips"] == 6
    sources = [(Path(c["source"]).name, c["start"], c["end"]) for c in ds["clips"]]
    assert [s[0] for s in sources] == ["mono_24k.wav", "mono_16k.ogg", "mono_16k.ogg", "mono_22k.mp3",
                                       "stereo_44k.flac", "stereo_44k.flac"]
    for c in ds["clips"]:
        assert c["text_by"] == "asr" and len(c["text"]) == 16 and c["text"].isprintable()  # tiny Whisper's gibberish
        assert abs(c["seconds"] - (c["end"] - c["start"])) < 0.002 and 1.0 <= c["seconds"] <= 15.0
        assert Path(c["audio"]).parent == out / "clips"
    assert 0.29 <= sources[4][1] < sources[4][2] < sources[5][1] < sources[5][2] <= 7.5
    report = (out / "report.txt").read_text(encoding="utf-8")
    assert "corrupt.wav: unreadable: cannot decode" in report and "nan.wav: non_finite: 1 NaN" in report
    assert summary["rows_skipped"] == {"non_finite": 1, "unreadable": 1}
    lines = (out / "metadata.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "audio_file|text" and all(line.startswith(str(out / "clips") + "/") for line in lines[1:])
    assert len(lines) == 7


def mtimes(out) -> dict:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.parent.name in ("clips", "mel") or p.name == "asr.jsonl"}


def rows(out) -> list[list[str]]:
    return [line.split("|") for line in (out / "metadata.csv").read_text(encoding="utf-8").splitlines()]


def write_rows(out, table) -> None:
    (out / "metadata.csv").write_text("".join("|".join(r) + "\n" for r in table), encoding="utf-8")


def test_reruns_reuse_work_and_a_persons_edits_and_drops_survive(whisper, tmp_path, monkeypatch):
    import finetune.transcribe as transcribe

    src = tmp_path / "recs"
    src.mkdir()
    sf.write(src / "a.wav", talk(24000, [(2.0, 1), (2.5, 2), (2.2, 3), (2.4, 4)]), 24000)
    cfg = config(src, tmp_path / "ds", "transcribe=true", f"asr.model={whisper}")
    out = prepare(cfg)
    first, before = dataset(out)["summary"]["sha256"], mtimes(out)
    assert len(rows(out)) == 5

    heard, real = [], transcribe._pipeline  # every clip the recogniser is given from here on

    def counting(*args):
        pipe = real(*args)

        def run(inputs, **kwargs):
            heard.extend(inputs)
            return pipe(inputs, **kwargs)
        run.model = pipe.model
        return run

    monkeypatch.setattr(transcribe, "_pipeline", counting)
    prepare(cfg)
    assert dataset(out)["summary"]["sha256"] == first and mtimes(out) == before and heard == []

    table = rows(out)
    table[2][1] = "A person wrote this."  # one transcript corrected
    del table[4]  # one clip dropped
    write_rows(out, table)
    prepare(cfg)
    ds, after = dataset(out), mtimes(out)
    assert ds["summary"]["sha256"] != first and heard == []
    assert all(before[k] == t for k, t in after.items()) and len(before) - len(after) == 1  # the dropped clip's mel
    assert [c["text_by"] for c in ds["clips"]] == ["asr", "person", "asr"]
    assert ds["clips"][1]["text"] == "A person wrote this." and len(ds["clips"]) == 3
    assert "dropped: its row was removed" in (out / "report.txt").read_text(encoding="utf-8")
    edited = (out / "metadata.csv").read_bytes()

    prepare(cfg)  # again: the edit and the drop hold, and the file is left as the person wrote it
    assert (out / "metadata.csv").read_bytes() == edited and len(dataset(out)["clips"]) == 3

    # another recogniser: rows the tool wrote follow it; the person's row does not; the dropped clip stays out
    other = write_tiny_whisper(tmp_path / "other", max_length=10, seed=1)
    prepare(cfg | {"asr": cfg["asr"] | {"model": str(other)}})
    ds = dataset(out)
    assert len(heard) == 2 and [len(c["text"]) for c in ds["clips"]] == [10, 20, 10]
    assert [c["text_by"] for c in ds["clips"]] == ["asr", "person", "asr"]
    assert ds["summary"]["asr"]["model"] == str(other)


def test_review_functions_edit_drop_and_restore(whisper, tmp_path):
    from finetune.review import review_clips, save_review

    src = tmp_path / "recs"
    src.mkdir()
    sf.write(src / "a.wav", talk(16000, [(2.0, 7), (2.5, 8), (2.2, 9)]), 16000)
    out = prepare(config(src, tmp_path / "ds", "transcribe=true", f"asr.model={whisper}"))
    first, mel = dataset(out)["summary"]["sha256"], {p.name for p in (out / "mel").iterdir()}
    listed = review_clips(out)
    assert [c["text_by"] for c in listed] == ["asr"] * 3 and all(c["in_dataset"] for c in listed)
    a, b, c = (x["audio"] for x in listed)

    save_review(out, {a: "Fixed by hand."}, {b})
    ds = dataset(out)
    assert ds["summary"]["sha256"] != first and [x["audio"] for x in ds["clips"]] == [a, c]
    assert ds["clips"][0]["text"] == "Fixed by hand." and ds["clips"][0]["text_by"] == "person"
    assert {p.name for p in (out / "mel").iterdir()} <= mel  # nothing computed anew
    listed = review_clips(out)
    assert [x["dropped"] for x in listed] == [False, True, False] and listed[1]["asr_text"] == listed[2]["asr_text"]

    save_review(out, {b: listed[1]["asr_text"]}, set())  # restored with the recogniser's text
    assert [x["audio"] for x in dataset(out)["clips"]] == [a, b, c]
    assert [x["text_by"] for x in review_clips(out)] == ["person", "asr", "asr"]
    with pytest.raises(UserError, match="not a clip of"):
        save_review(out, {str(tmp_path / "elsewhere.wav"): "x"}, set())
    with pytest.raises(UserError, match="holds | or a line break"):
        save_review(out, {a: "two|columns"}, set())


def test_offline_with_no_model_is_one_line_and_writes_nothing(tmp_path):
    src = tmp_path / "recs"
    src.mkdir()
    sf.write(src / "a.wav", talk(16000, [(2.0, 1)]), 16000)
    with pytest.raises(UserError, match=r"asr\.model=openai/whisper-large-v3-turbo: not in the local hub cache and "
                                        r"HF_HUB_OFFLINE is set; set asr\.model=/path/to/local/whisper"):
        prepare(config(src, tmp_path / "ds", "transcribe=true"))
    with pytest.raises(UserError, match=r"asr\.model=/nowhere/whisper: no such folder"):
        prepare(config(src, tmp_path / "ds", "transcribe=true", "asr.model=/nowhere/whisper"))
    assert not (tmp_path / "ds").exists()


def test_a_piece_no_neighbour_can_take_is_counted_listed_and_restorable(whisper, tmp_path, capsys):
    from finetune.review import review_clips, save_review

    src = tmp_path / "recs"
    src.mkdir()
    # 3 s of speech, then 1.2 s that would make a clip of 5 s with it, over slice.max_seconds=4
    sf.write(src / "a.wav", talk(16000, [(3.0, 1), (1.2, 2)]), 16000)
    cfg = config(src, tmp_path / "ds", "transcribe=true", f"asr.model={whisper}", "slice.min_seconds=2",
                 "slice.max_seconds=4")
    out = prepare(cfg)
    summary = dataset(out)["summary"]
    assert summary["clips"] == 1 and summary["left_out"]["short_pieces"] == {"pieces": 1, "seconds": pytest.approx(1.4, abs=0.05)}
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "skipped: none; left out: 1 short piece of speech (1.4" in line and "s) no neighbour could take" in line
    assert "_001.wav: short_piece: 1.4" in (out / "report.txt").read_text(encoding="utf-8")

    listed = review_clips(out)
    assert [(c["short"], c["dropped"], c["in_dataset"]) for c in listed] == [(False, False, True), (True, True, False)]
    assert listed[1]["problem"].startswith("short_piece: 1.4") and listed[1]["asr_text"]  # heard, for a restore
    save_review(out, {listed[1]["audio"]: listed[1]["asr_text"]}, set())  # unticked on the review page
    ds = dataset(out)
    assert [c["audio"] for c in ds["clips"]] == [c["audio"] for c in listed] and ds["clips"][1]["text_by"] == "asr"
    assert ds["summary"]["left_out"]["short_pieces"] == {"pieces": 0, "seconds": 0}
    prepare(cfg)  # a re-run keeps it
    assert len(dataset(out)["clips"]) == 2


def noisy_talk(sr: int, snr_db: float, seed: int = 0):
    """Four utterances of real speech (the clips the f5-tts package ships) between pauses of 1.5 s, under white
    noise at snr_db: no frame quiet enough for an energy threshold, while a voice-activity model hears the pauses.
    Returns the samples and where each utterance is, in seconds."""
    from importlib.resources import files

    from finetune.media.audio import load_audio

    folder = Path(str(files("f5_tts").joinpath("infer/examples")))
    parts, where, t = [], [], 1.5
    for name in ("basic/basic_ref_en.wav", "multi/town.flac", "basic/basic_ref_zh.wav", "multi/country.flac"):
        y = load_audio(folder / name, sr).numpy()
        parts += [silence(1.5, sr), y]
        where.append((t, t + y.size / sr))
        t += y.size / sr + 1.5
    parts.append(silence(1.5, sr))
    y = np.concatenate(parts)
    speech = np.sqrt(np.mean(np.concatenate(parts[1::2]) ** 2))
    noise = np.random.default_rng(seed).standard_normal(y.size).astype(np.float32) * speech / 10 ** (snr_db / 20)
    return y + noise, where


def test_vad_finds_the_pauses_under_noise_where_energy_hears_sound_everywhere():
    sr = 24000
    y, where = noisy_talk(sr, snr_db=10)
    s = SLICE | {"min_seconds": 3.0, "max_seconds": 12.0, "pad": 0.1}
    spans, short = find_clips(y, sr, s | {"detector": "vad"})
    assert len(spans) == len(where) and not short
    edges = [0.0] + [t for span in where for t in span] + [y.size / sr]
    for i, (a, b) in enumerate(spans):  # each clip one utterance (files start and end with some quiet of their own)
        (start, end), before, after = where[i], edges[2 * i], edges[2 * i + 3]
        assert before < a / sr < start + 1.0 and end - 1.0 < b / sr < after, (a / sr, b / sr, where[i])
    spans, _ = find_clips(y, sr, s)  # the noise is over slice.silence_db: one stretch of sound, cut to fit
    assert spans[0][0] == 0 and spans[-1][1] == y.size
