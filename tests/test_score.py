"""Checkpoint scores (python -m infer.score): validation loss on the held-out clips, and with a tiny random Whisper
and a tiny random speaker model built here, error rates and speaker similarity of speech synthesised through
inference's code; scores.json merged and its best row picked by ckpt=best in inference and export."""
import json
import shutil

import pytest

from finetune.lock.checkpoints import header, list_checkpoints
from finetune.lock.errors import UserError
from finetune.media.scores import best_row
from tests.conftest import ERROR_LINE, finetune, infer
from bench.makers import write_clips, write_metadata, write_tiny_whisper
from tests.test_runs_data import prepare

FAST = ["nfe_step=2", "vocoder=griffinlim", "device=cpu"]


def write_tiny_speaker_model(folder, seed: int = 0):
    """A WavLM x-vector model with random weights (20 ms frames, as the real ones have), saved as a hub folder
    (config, preprocessor, safetensors)."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    config = WavLMConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         conv_dim=(16, 16, 16), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, tdnn_dim=(16, 16), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1),
                         xvector_output_dim=8, num_buckets=32, max_bucket_distance=64)
    torch.manual_seed(seed)
    WavLMForXVector(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, return_attention_mask=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run with 3 held-out clips and checkpoints at updates 2 and 4 (never written into: copy it)."""
    root = tmp_path_factory.mktemp("score")
    ds = prepare(write_metadata(root / "m.csv", write_clips(root / "src", 8, seed=5, max_s=2.5)), root / "ds")
    return finetune(root, "r", "f5tts_tiny", "data=custom", f"data.path={ds}", "data.frames_per_batch=900",
                    "vocab.accept_unknown=true", "data.val_clips=3")


def copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / run.name)


def score(*args):
    from infer.score import parse, score

    return score(parse(list(args)))


def test_scoring_with_a_recogniser_and_a_speaker_model_writes_the_table(trained, tmp_path, capsys):
    from infer.score import main

    run = copy(trained, tmp_path)
    whisper = write_tiny_whisper(tmp_path / "whisper")
    speaker = write_tiny_speaker_model(tmp_path / "speaker")
    main([f"run={run}", f"asr.model={whisper}", "asr.language=en", f"speaker.model={speaker}", "max_clips=2", *FAST])
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"scores: {run / 'scores.json'}"
    scores = json.loads((run / "scores.json").read_text())
    rows = scores["rows"]
    assert [(r["update"], r["weights"]) for r in rows] == [(2, "ema"), (2, "online"), (4, "ema"), (4, "online")]
    held = scores["held_out"]["rows"]
    for r in rows:
        assert 0 <= r["wer"] and 0 <= r["cer"] and -1 <= r["speaker_similarity"] <= 1 and 1 <= r["quality"] <= 5
        # two of the three held-out clips spoken (max_clips=2), each in the other's voice; the loss takes all three
        assert [(c["row"], c["prompt"]) for c in r["clips"]] == [(held[0], held[1]), (held[1], held[0])]
        assert all(c["heard"] and c["seconds"] > 0 for c in r["clips"])
        meta = header(list_checkpoints(run)[r["update"]])[1]
        assert r["weights_sha256"] == meta[f"{r['weights']}_sha256"]
        assert r["val_loss"] == pytest.approx(float(meta["val_loss" if r["weights"] == "online" else "val_loss_ema"]),
                                              abs=1e-6)
    (setup,) = scores["setups"].values()
    assert setup["asr"]["weights_sha256"] and setup["speaker"]["weights_sha256"] and setup["synthesis"]["seed"] == 0
    assert setup["quality"]["model"].startswith("distillmos ") and len(setup["quality"]["weights_sha256"]) == 64
    best = min(rows, key=lambda r: (r["wer"], r["val_loss"]))
    assert scores["best"] == {"update": best["update"], "weights": best["weights"], "by": "wer"}
    starred = [line for line in out if line.startswith("*")]
    assert len(starred) == 1 and starred[0].split()[1:3] == [str(best["update"]), best["weights"]]

    # the same seed gives the same speech, so the same transcripts: scoring one row again replaces it alike
    again, _ = score(f"run={run}", "ckpt=2", "weights=online", f"asr.model={whisper}", "asr.language=en", "max_clips=2",
                     *FAST)
    rescored = json.loads(again.read_text())
    assert len(rescored["rows"]) == 4 and len(rescored["setups"]) == 2
    new = next(r for r in rescored["rows"] if (r["update"], r["weights"]) == (2, "online"))
    old = next(r for r in rows if (r["update"], r["weights"]) == (2, "online"))
    assert [c["heard"] for c in new["clips"]] == [c["heard"] for c in old["clips"]]
    assert new["speaker_similarity"] is None


def test_ckpt_best_picks_the_best_row_in_inference_and_export(trained, tmp_path, capsys):
    run = copy(trained, tmp_path)
    with pytest.raises(UserError, match="has no scores yet; score it first with python -m infer.score") as e:
        infer(f"run={run}", "ckpt=best", *FAST[:2])
    assert "\n" not in str(e.value)
    path, _ = score(f"run={run}", "quality=false")  # loss only: best by validation loss
    scores = json.loads(path.read_text())
    # recognition scores as a recogniser would give them: the best is not the lowest loss, nor the last update
    wer = {(2, "online"): 0.4, (2, "ema"): 0.9, (4, "ema"): 0.5, (4, "online"): 0.7}
    for r in scores["rows"]:
        r["wer"] = wer[(r["update"], r["weights"])]
    path.write_text(json.dumps(scores))
    assert best_row(scores["rows"])[0]["update"] == 2
    # without WER, the highest quality score is the best; without either, the lowest validation loss
    rated = [r | {"wer": None, "quality": {(2, "online"): 2.1, (2, "ema"): 3.4}.get((r["update"], r["weights"]), 1.5)}
             for r in scores["rows"]]
    assert best_row(rated)[1] == "quality" and (best_row(rated)[0]["update"], best_row(rated)[0]["weights"]) == (2, "ema")
    plain = [r | {"wer": None} for r in scores["rows"]]
    assert best_row(plain) == (min(plain, key=lambda r: (r["val_loss"], r["update"])), "val_loss")

    out = infer(f"run={run}", "ckpt=best", f"out={tmp_path / 'best.wav'}", *FAST[:2])
    err = capsys.readouterr().err
    assert out.is_file() and "ckpt=best: update 2, online weights (WER 0.400" in err
    assert "model_00000002.safetensors (online)" in err
    infer(f"run={run}", "ckpt=best", "weights=ema", f"out={tmp_path / 'ema.wav'}", *FAST[:2])
    assert "ckpt=best: update 4, ema weights" in capsys.readouterr().err
    exported = infer("export", f"run={run}", "ckpt=best", f"out={tmp_path / 'best.safetensors'}")
    meta = header(exported)[1]
    assert (meta["source_checkpoint"], meta["weights"]) == ("model_00000002.safetensors", "online")


def test_without_models_only_the_loss_is_scored_as_the_trainer_measured_it(trained, tmp_path, capsys):
    from infer.score import main

    run = copy(trained, tmp_path)
    main([f"run={run}", "ckpt=last", "weights=online", "quality=false"])
    (row,) = json.loads((run / "scores.json").read_text())["rows"]
    meta = header(list_checkpoints(run)[4])[1]
    assert row["val_loss"] == pytest.approx(float(meta["val_loss"]), abs=1e-6) == pytest.approx(row["val_loss_trainer"])
    assert row["wer"] is row["cer"] is row["speaker_similarity"] is row["quality"] is None and row["clips"] == []
    out = capsys.readouterr().out
    assert "* best, by val_loss" in out and "recogniser none; speaker model none; quality none" in out
    main([f"run={run}", "ckpt=2", "weights=online", "quality=false"])  # merged with the earlier row
    rows = json.loads((run / "scores.json").read_text())["rows"]
    assert [(r["update"], r["weights"]) for r in rows] == [(2, "online"), (4, "online")]


def test_the_quality_score_needs_no_hub_and_picks_the_best_row_without_wer(trained, tmp_path, capsys):
    """By default (no recogniser, no speaker model, HF_HUB_OFFLINE set by conftest) each row gets the predicted MOS
    of its synthesised speech beside the loss, and the best row is the highest score."""
    from infer.score import main

    run = copy(trained, tmp_path)
    main([f"run={run}", "weights=ema", "max_clips=2", *FAST])
    scores = json.loads((run / "scores.json").read_text())
    rows = scores["rows"]
    assert [r["update"] for r in rows] == [2, 4] and all(r["wer"] is r["speaker_similarity"] is None for r in rows)
    for r in rows:
        assert 1 <= r["quality"] <= 5 and len(r["clips"]) == 2
        assert r["quality"] == pytest.approx(sum(c["quality"] for c in r["clips"]) / 2)
    best = max(rows, key=lambda r: r["quality"])
    assert scores["best"] == {"update": best["update"], "weights": "ema", "by": "quality"}
    out = capsys.readouterr().out
    assert "* best, by quality" in out and "quality distillmos " in out and " quality " in out.splitlines()[1]


def test_refusals_are_one_line(trained, tmp_path, capsys):
    from infer.score import main

    plain = finetune(tmp_path, "plain", "f5tts_tiny", "train.max_updates=1", "train.save_every=1")
    capsys.readouterr()
    cases = [([f"run={plain}"], "holds no clips out of training", "data.val_clips=N"),
             ([f"run={trained}", "asr.model=someone/whisper-x"], "asr.model=someone/whisper-x", "HF_HUB_OFFLINE"),
             ([f"run={trained}", "speaker.model=someone/sv-x"], "speaker.model=someone/sv-x", "HF_HUB_OFFLINE"),
             ([f"run={trained}", "ckpt=3"], "ckpt=3", "2, 4"),
             ([f"run={trained}", "weights=both"], "weights=both", "ema,online"),
             ([f"run={trained}", "asr.modle=x"], "asr.modle: not a key", "model")]
    for args, *needles in cases:
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and ERROR_LINE.match(err[0]), err
        assert all(n in err[0] for n in needles), err
    assert not (trained / "scores.json").exists() and not (plain / "scores.json").exists()


@pytest.mark.parametrize("forge", ["setup is a list", "cer is text", "a setup is not a mapping", "wer is true"])
def test_a_forged_scores_file_is_refused_in_one_line(tmp_path, forge):
    from finetune.media.scores import NAME, merge, read_scores

    row = {"update": 4, "weights": "ema", "val_loss": 1.5, "wer": 0.2, "cer": 0.1, "speaker_similarity": 0.9}
    data = merge(None, [row], "s1", {"asr": "tiny"}, {"manifest_sha256": "abc"})
    (tmp_path / NAME).write_text(json.dumps(data))
    assert read_scores(tmp_path, "abc")["rows"][0]["cer"] == 0.1  # the unforged file reads
    r = data["rows"][0]
    if forge == "setup is a list":
        r["setup"] = ["s1"]
    elif forge == "cer is text":
        r["cer"] = "0.1"
    elif forge == "a setup is not a mapping":
        data["setups"]["s1"] = "tiny"
    else:
        r["wer"] = True
    (tmp_path / NAME).write_text(json.dumps(data))
    with pytest.raises(UserError, match="not a f5tune-scores/1 file; delete it and score the run again") as e:
        read_scores(tmp_path, "abc")
    assert "\n" not in str(e.value)


def test_two_scorings_of_one_run_at_once_keep_both_rows(tmp_path):
    """A scoring that finishes while another holds scores.json waits for it, then merges into what it wrote;
    without the lock the later write would drop the earlier one's row."""
    import threading

    from finetune.lock.files import FolderLock
    from finetune.media.scores import merge, merge_into, read_scores, write_scores

    head = {"manifest_sha256": "abc"}
    row = {"update": 2, "weights": "ema", "val_loss": 1.5, "wer": None, "cer": None, "speaker_similarity": None}
    other = FolderLock(tmp_path, "another scoring", name=".scores.lock").acquire()
    second = threading.Thread(target=merge_into, args=(tmp_path, "abc", [row | {"update": 4}], "s1", {}, head))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waiting for the first scoring to finish
    write_scores(tmp_path, merge(read_scores(tmp_path, "abc"), [row], "s1", {}, head))  # the first one's write
    other.release()
    second.join(10)
    assert [r["update"] for r in read_scores(tmp_path, "abc")["rows"]] == [2, 4]
    (tmp_path / ".scores.lock").unlink()
    (tmp_path / ".scores.lock").mkdir()  # a lock that cannot be opened: one line, scores.json as it was
    before = (tmp_path / "scores.json").read_bytes()
    with pytest.raises(UserError, match="cannot take its lock"):
        merge_into(tmp_path, "abc", [row | {"update": 6}], "s1", {}, head)
    assert (tmp_path / "scores.json").read_bytes() == before
