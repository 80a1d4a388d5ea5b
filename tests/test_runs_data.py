"""What runs do with a prepared dataset: vocab coverage and extension, mel settings, frame budget, and a
dataset that changes under a run (edited text, swapped or cut mel files) is caught, not trained on."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from finetune.config import compose_config, plain
from finetune.lock.checkpoints import list_checkpoints, load_weights
from finetune.lock.errors import UserError
from finetune.lock.vocab import EMBED
from tests.conftest import finetune, infer
from bench.makers import write_clips, write_metadata


def prepare(src, out, *extra) -> Path:
    """python -m finetune.prepare's code in this process. Without quality scores unless a test asks for them
    (`quality.`/`filter.` keys): scoring is 0.3 s of CPU per clip that these tests never look at, and
    test_quality, test_raw and the browser tests keep it on, as the default is."""
    from finetune.prepare import prepare as prepare_dataset
    from finetune.prepare_schema import PrepareConfig

    asked = any(e.startswith(("quality.", "filter.")) for e in extra)
    overrides = [f"input={src}", f"out={out}", "workers=1", *([] if asked else ["quality.model=null"]), *extra]
    return prepare_dataset(plain(compose_config("prepare", overrides), PrepareConfig))


def dataset(out) -> dict:
    return json.loads((Path(out) / "dataset.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    rows = write_clips(root / "src", 6, seed=8, max_s=3.0)
    rows[1] = (rows[1][0], "Words with ɐ and ¤ symbols, ɐ again.")  # two symbols the shipped vocab lacks
    return prepare(write_metadata(root / "meta.csv", rows), root / "ds")


def tune(root, name, ds, *extra) -> Path:
    return finetune(root, name, "f5tts_tiny", "data=custom", f"data.path={ds}", "data.frames_per_batch=800",
                    *extra)


def test_unknown_symbols_stop_the_run_until_a_choice_is_made(prepared, tmp_path, capsys):
    with pytest.raises(UserError) as e:
        tune(tmp_path, "x", prepared)
    for needle in ("2 symbols are not in the vocab", "'ɐ' x2", "'¤' x1", "meta.csv:3", "vocab.extend=true",
                   "vocab.accept_unknown=true"):
        assert needle in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "x").exists()
    tune(tmp_path, "accepted", prepared, "vocab.accept_unknown=true", "train.max_updates=1")
    assert "map to the unknown token 0" in capsys.readouterr().err


def test_extended_vocab_round_trips_and_refuses_the_old_vocab(prepared, runs, tmp_path):
    run = tune(tmp_path, "ext", prepared, "vocab.extend=true", f"pretrained={runs['f5']}", "train.max_updates=2")
    manifest = yaml.safe_load((run / "manifest.yaml").read_text(encoding="utf-8"))
    base = (runs["f5"] / "vocab.txt").read_text(encoding="utf-8")
    assert (run / "vocab.txt").read_text(encoding="utf-8") == base + "¤\nɐ\n"
    assert manifest["model"]["vocab"]["extended_from"]["added"] == ["¤", "ɐ"]
    assert manifest["model"]["vocab"]["size"] == len(base.splitlines()) + 2
    assert manifest["data"]["sha256"] == dataset(prepared)["summary"]["sha256"] and manifest["data"]["clips"] == 6
    last = list_checkpoints(run)[2]
    for weights in ("ema", "online"):
        assert load_weights(last, weights)[EMBED].shape[0] == len(base.splitlines()) + 3
    assert infer(f"run={run}", "gen_text=Say ɐ.", f"out={tmp_path / 'ext.wav'}", "nfe_step=2", "vocoder=griffinlim").exists()
    (run / "vocab.txt").write_text(base, encoding="utf-8")  # someone puts the pretrained vocab back
    with pytest.raises(UserError, match="vocab"):
        infer(f"run={run}", "gen_text=Hi.", f"out={tmp_path / 'no.wav'}", "nfe_step=2", "vocoder=griffinlim")


def test_growing_keeps_old_rows_bit_identical(runs):
    from finetune.lock.builder import model_spec
    from finetune.lock.manifest import read_manifest
    from finetune.lock.vocab import read_vocab
    from finetune.runs import initial_model

    vocab, _ = read_vocab(runs["f5"] / "vocab.txt")
    grown_vocab = vocab + ["ɐ", "¤", "ʘ"]
    spec = model_spec(read_manifest(runs["f5"])["config"]["model"], grown_vocab)
    model, _, ema_start = initial_model(spec, grown_vocab, str(runs["f5"]), "f5tts_tiny", grow=3, seed=11)
    new_rows = torch.randn(3, model.state_dict()[EMBED].shape[1], generator=torch.Generator().manual_seed(11))
    # as upstream's Trainer: the model from the online weights, the EMA from the EMA weights; both grown alike
    for weights, grown in (("online", model.state_dict()), ("ema", ema_start["weights"])):
        source = load_weights(list_checkpoints(runs["f5"])[4], weights)
        assert torch.equal(grown[EMBED][: len(vocab) + 1], source[EMBED])
        assert torch.equal(grown[EMBED][len(vocab) + 1:], new_rows)
        assert all(torch.equal(grown[k], v) for k, v in source.items() if k != EMBED)
    saved = torch.load(runs["f5"] / "checkpoints" / "state_00000004.pt", weights_only=True)
    assert torch.equal(ema_start["step"], saved["ema_step"])  # the run's EMA continues where it was


def test_runs_refuse_other_mel_settings_and_a_small_frame_budget(prepared, tmp_path):
    prepare(dataset(prepared)["summary"]["source"]["input"], tmp_path / "ds80", "model.mel.n_mel_channels=80")
    with pytest.raises(UserError, match="other mel settings.*n_mel_channels: 80 -> 100"):
        tune(tmp_path, "m", tmp_path / "ds80", "vocab.accept_unknown=true")
    longest = dataset(prepared)["summary"]["longest_frames"]
    with pytest.raises(UserError, match=f"data.frames_per_batch=100 is smaller than the longest clip.*{longest} frames"):
        tune(tmp_path, "b", prepared, "data.frames_per_batch=100", "vocab.accept_unknown=true")
    assert not (tmp_path / "m").exists() and not (tmp_path / "b").exists()


def resume(run, *overrides):
    from finetune.__main__ import run as run_command

    return run_command([f"resume={run}", *overrides])


@pytest.fixture
def trained(prepared, tmp_path):
    ds = shutil.copytree(prepared, tmp_path / "ds")
    return tune(tmp_path, "r", ds, "vocab.accept_unknown=true", "train.max_updates=1"), ds


def test_resume_refuses_a_dataset_prepared_again_differently(trained):
    run, ds = trained
    data = dataset(ds)
    data["clips"] = data["clips"][:-1]  # as a new preparation would write it: a consistent, different dataset
    from finetune.media.dataset import dataset_hash

    data["summary"]["sha256"] = dataset_hash(data["summary"]["mel"], data["clips"], data["summary"]["loudness"])
    (ds / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match="dataset at data.path changed since the run started"):
        resume(run, "train.max_updates=2")


def test_an_edited_clip_text_is_caught_not_trained_on(trained):
    """The stored hash is not trusted: it is recomputed from the clips, so an edit by hand shows."""
    run, ds = trained
    data = dataset(ds)
    data["clips"][0]["text"] = "Something else entirely."
    (ds / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match="no longer match the hash prepare recorded"):
        resume(run, "train.max_updates=2")


def test_swapped_or_cut_mel_files_are_caught_before_training(trained):
    run, ds = trained
    clips = dataset(ds)["clips"]
    a, b = (ds / c["mel"] for c in sorted(clips, key=lambda c: c["frames"])[::len(clips) - 1])  # shortest, longest
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    with pytest.raises(UserError, match="holds mel .* the dataset says"):
        resume(run, "train.max_updates=2")
    a.write_bytes(a_bytes[: len(a_bytes) // 2])
    with pytest.raises(UserError, match="missing or damaged"):
        resume(run, "train.max_updates=2")
    assert max(list_checkpoints(run)) == 1


def test_custom_data_without_a_path_is_one_line(tmp_path):
    with pytest.raises(UserError, match="data.path"):
        finetune(tmp_path, "x", "f5tts_tiny", "data=custom")
