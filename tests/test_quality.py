"""Data worth training on: clips set to one loudness (ITU-R BS.1770) with their peaks limited, a speech-quality score
per clip from a predictor whose weights ship in its package (offline), and filter.min_quality leaving out a clip
made noisy on purpose, restorable in Review."""
import hashlib
import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from finetune.media.audio import decode
from finetune.loudness import measure, normalize
from finetune.prepare import prepare
from bench.makers import speechlike
from test_raw import config, dataset, silence

SPEECH = Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))  # real speech, 5.3 s


def noisy(y: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rms = np.sqrt(np.mean(y ** 2))
    return (y + np.random.default_rng(seed).standard_normal(y.size).astype(np.float32) * rms / 10 ** (snr_db / 20))


@pytest.mark.parametrize("gain_db", [-30, -6, 0, 12])
def test_clips_come_out_at_the_target_loudness_with_no_peak_over_the_limit(gain_db):
    speech, sr = decode(SPEECH.read_bytes())
    for y in (speech, speechlike(3.0, 24000, seed=1), np.concatenate([speech, 0.2 * speech])):
        y = (y * 10 ** (gain_db / 20)).astype(np.float32)  # +12 dB: samples far over full scale, limited back
        out, info = normalize(y, sr, -20.0, -1.0)
        assert abs(measure(out, sr) - -20.0) < 1.0 and abs(info["lufs"] - measure(y, sr)) < 1e-9
        assert np.abs(out).max() <= 10 ** (-1 / 20) + 1e-6
    silent, info = normalize(np.zeros(24000, np.float32), 24000, -20.0, -1.0)  # nothing to measure: as it was
    assert info["lufs"] is None and not silent.any()


def test_the_mel_is_of_the_clip_at_the_target_loudness(tmp_path):
    from safetensors.torch import load_file

    speech, sr = decode(SPEECH.read_bytes())
    (tmp_path / "src").mkdir()
    sf.write(tmp_path / "src" / "quiet.wav", 0.05 * speech, sr)
    (tmp_path / "src" / "quiet.txt").write_text("Some call me nature, others call me mother nature.")
    kept = {}
    for target in ("null", "-20", "-26"):
        out = prepare(config(tmp_path / "src", tmp_path / f"ds{target}", f"loudness.target_lufs={target}",
                             "quality.model=null"))
        ds = dataset(out)
        kept[target] = (load_file(out / ds["clips"][0]["mel"])["mel"], ds)
    (mel, ds), (same, _) = kept["-20"], kept["null"]
    lufs = ds["clips"][0]["lufs"]
    assert lufs == pytest.approx(measure(0.05 * speech, sr), abs=0.01) and lufs < -40
    assert ds["summary"]["loudness"]["target_lufs"] == -20 and ds["summary"]["loudness"]["input_lufs"]["min"] == lufs
    loud = same > np.log(1e-5) + 1  # bins above the mel's floor: their log magnitude moves by the gain
    assert float((mel - same)[loud].mean()) == pytest.approx((-20 - lufs) * np.log(10) / 20, abs=0.05)
    hashes = {t: d["summary"]["sha256"] for t, (_, d) in kept.items()}
    assert len(set(hashes.values())) == 3  # the loudness is part of what a run trains on
    assert kept["null"][1]["summary"]["loudness"] is None and "lufs" not in kept["null"][1]["clips"][0]


def test_every_clip_gets_a_quality_score_offline_and_the_filter_leaves_out_the_noisy_one(tmp_path, capsys):
    import distillmos

    speech, sr = decode(SPEECH.read_bytes())
    sf.write(tmp_path / "clean.wav", speech, sr)
    sf.write(tmp_path / "noisy.wav", noisy(speech, snr_db=0), sr)  # made noisy on purpose
    meta = tmp_path / "meta.csv"
    meta.write_text("clean.wav|Some call me nature.\nnoisy.wav|Others call me mother nature.\n")
    out = prepare(config(meta, tmp_path / "all"))  # scored by default, nothing left out
    ds = dataset(out)
    weights = Path(distillmos.__file__).parent / "weights" / "distill_mos_v7.pt"
    scored = ds["summary"]["quality"]
    assert scored["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert scored["model"].startswith("distillmos ") and scored["min_quality"] is None and scored["left_out"] == 0
    clean, dirty = (c["quality"] for c in ds["clips"])
    assert clean > 3.5 and dirty < 2.5 and scored["kept"]["min"] == dirty and scored["kept"]["max"] == clean
    from finetune.app import datasets  # what the Browse table shows

    assert [r[datasets.HEADERS.index("quality")] for r in datasets.clips(out)] == [clean, dirty]
    assert f"quality ({scored['model']}) {dirty:.2f}-{clean:.2f}" in datasets.describe(ds["summary"])

    capsys.readouterr()
    out = prepare(config(meta, tmp_path / "filtered", "filter.min_quality=3"))
    ds = dataset(out)
    assert [Path(c["audio"]).name for c in ds["clips"]] == ["clean.wav"] and ds["summary"]["quality"]["left_out"] == 1
    assert ds["summary"]["left_out"]["low_quality"] == 1 and ds["summary"]["rows_skipped"] == {}
    assert f"meta.csv:2: low_quality: quality {dirty:.2f} is under filter.min_quality=3; lower filter.min_quality" \
        in (out / "report.txt").read_text(encoding="utf-8")
    assert capsys.readouterr().out.strip().endswith("skipped: none; left out: 1 under filter.min_quality=3)")
    cached = [json.loads(line) for line in (out / "quality.jsonl").read_text().splitlines()]
    assert sorted(round(e["score"], 3) for e in cached) == sorted([clean, dirty])


def test_a_clip_left_out_for_its_quality_is_restored_in_review(tmp_path):
    from finetune.review import review_clips, save_review
    from bench.makers import write_tiny_whisper

    speech, sr = decode(SPEECH.read_bytes())
    src = tmp_path / "recs"
    src.mkdir()
    sf.write(src / "talk.wav", np.concatenate([silence(0.5, sr), speech, silence(1.0, sr), noisy(speech, 0),
                                               silence(0.5, sr)]), sr)
    whisper = write_tiny_whisper(tmp_path / "whisper")
    cfg = config(src, tmp_path / "ds", "transcribe=true", f"asr.model={whisper}", "slice.min_seconds=3",
                 "filter.min_quality=3")
    out = prepare(cfg)
    assert len(dataset(out)["clips"]) == 1
    listed = review_clips(out)
    assert [c["dropped"] for c in listed] == [False, True] and listed[1]["problem"].startswith("low_quality: quality ")
    assert listed[0]["quality"] > 3 > listed[1]["quality"]  # the left-out clip's score is shown too
    from finetune.app import transcripts  # what the Review table shows

    table = transcripts.table(listed, tmp_path)
    assert [r[transcripts.HEADERS.index("quality")] for r in table] == [c["quality"] for c in listed]
    assert [r[transcripts.DROP] for r in table] == [False, True]
    table[1][transcripts.DROP] = False  # unticked on the page: restored with its text
    assert transcripts.decisions(listed, table) == ({listed[1]["audio"]: listed[1]["text"]}, set())
    save_review(out, {listed[1]["audio"]: listed[1]["text"]}, set())  # unticked on the review page
    assert len(dataset(out)["clips"]) == 2
    prepare(cfg)  # restored by a person: the filter leaves it in from then on
    assert [c["quality"] < 3 for c in dataset(out)["clips"]] == [False, True]
    save_review(out, {}, {listed[1]["audio"]})  # dropped again
    assert len(dataset(out)["clips"]) == 1
