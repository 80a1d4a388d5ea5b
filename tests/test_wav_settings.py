"""Every synthesised wav records the settings it was made with (checkpoint, weights, seed, sampling keys, vocoder,
texts, versions), inside the wav; they read back equal, synthesise the same samples again, and inspect prints them."""
import inspect
from dataclasses import fields

import pytest
import soundfile as sf
import torch
import yaml

from finetune.media.audio import MAX_SETTINGS_BYTES, wav_settings, write_wav
from finetune.media.sampling import FORMAT, record
from finetune.lock.schema import TrainConfig
from infer.config import Sampling
from infer.inspect import main as inspect_main
from infer.inspect import reproduce_args
from tests.conftest import finetune, infer


def settings(**overrides) -> dict:
    base = dict(run="runs/x", checkpoint="model_00000002.safetensors", update=2, manifest_sha256="ab" * 32,
                weights="ema", seed=1, device="cpu", nfe_step=4, cfg_strength=2.0, sway_sampling_coef=-1.0,
                use_epss=True, speed=1.0, vocoder="griffinlim", vocoder_path=None, vocoder_n_iter=32,
                ref_audio="ref.wav", ref_text="Some text.", gen_text="Other text.")
    return record("inference", **(base | overrides))


def test_use_epss_defaults_to_the_installed_upstream_signature():
    from f5_tts.model.cfm import CFM

    upstream = inspect.signature(CFM.sample).parameters["use_epss"].default
    assert Sampling().use_epss is upstream and TrainConfig().sample_use_epss is upstream


def test_a_record_holds_every_key_of_inference_sampling():
    """What inference's config may vary about sampling is all in the record, so a new key cannot go unrecorded."""
    assert {f.name for f in fields(Sampling)} <= set(settings())


@pytest.mark.parametrize("text", ['"Hello," she said. It\'s\na "test" | 对，这就是我', "x" * 10_000])
def test_settings_round_trip_inside_the_wav(tmp_path, text):
    """Quotes, line breaks, non-ASCII text, and a comment longer than the 2045 bytes libsndfile reads back."""
    path = tmp_path / "a.wav"
    wav = torch.linspace(-0.5, 0.5, 2400)
    write_wav(path, wav, 24000, settings(gen_text=text))
    assert wav_settings(path) == settings(gen_text=text)
    data, sr = sf.read(str(path), dtype="float32")
    assert sr == 24000 and data.shape == (2400,) and abs(data - wav.numpy()).max() < 1e-4


def test_a_text_too_long_for_the_wav_is_recorded_by_its_hash(tmp_path, capsys):
    import hashlib

    path, text = tmp_path / "long.wav", "y" * (2 * MAX_SETTINGS_BYTES)
    write_wav(path, torch.zeros(240), 24000, settings(gen_text=text))
    got = wav_settings(path)
    assert got["gen_text"] is None and got["gen_text_chars"] == len(text)
    assert got["gen_text_sha256"] == hashlib.sha256(text.encode()).hexdigest() and got["ref_text"] == "Some text."
    assert sf.info(str(path)).frames == 240
    inspect_main([str(path)])
    assert "reproduce: gen_text too long to be held" in capsys.readouterr().out


def test_inference_records_its_settings_and_they_reproduce_the_wav(runs, tmp_path, capsys):
    run, out = runs["f5"], tmp_path / "a.wav"
    text = 'He said "yes", twice.'
    infer(f"run={run}", f"gen_text={text}", f"out={out}", "ckpt=2", "weights=online", "seed=7", "nfe_step=5",
          "cfg_strength=1.5", "sway_sampling_coef=-0.5", "speed=1.2", "use_epss=false")
    manifest = yaml.safe_load((run / "manifest.yaml").read_text())
    got = wav_settings(out)
    assert got == got | {"format": FORMAT, "kind": "inference", "run": str(run), "checkpoint": "model_00000002.safetensors",
                         "update": 2, "manifest_sha256": manifest["sha256"], "weights": "online", "seed": 7,
                         "device": "cpu", "nfe_step": 5, "cfg_strength": 1.5, "sway_sampling_coef": -0.5,
                         "use_epss": False, "speed": 1.2, "vocoder": "griffinlim", "vocoder_path": None,
                         "vocoder_n_iter": manifest["config"]["vocoder"]["n_iter"],
                         "ref_audio": str(run / "reference.wav"), "ref_text": manifest["reference"]["text"],
                         "gen_text": text}
    assert got["versions"]["f5-tts"] == "1.1.22" and got["versions"]["f5tune"]

    again = infer(*reproduce_args(got), f"out={tmp_path / 'again.wav'}")
    assert (sf.read(str(again))[0] == sf.read(str(out))[0]).all()
    assert wav_settings(again) == got
    # use_epss reaches upstream's sampler: with nfe_step=5 its pruned schedule differs from the uniform one
    epss = infer(*reproduce_args(got | {"use_epss": True}), f"out={tmp_path / 'epss.wav'}")
    assert (sf.read(str(epss))[0] != sf.read(str(out))[0]).any()

    inspect_main([str(out)])
    printed = capsys.readouterr().out.splitlines()
    for key in ("checkpoint: model_00000002.safetensors", "weights: online", "seed: 7", "nfe_step: 5",
                "cfg_strength: 1.5", "sway_sampling_coef: -0.5", "use_epss: False", "speed: 1.2",
                "vocoder: griffinlim", f"manifest_sha256: {manifest['sha256']}", f"gen_text: {text}"):
        assert key in printed, (key, printed)
    assert printed[-1].startswith(f"reproduce: python -m infer run={run} ckpt=2 weights=online seed=7")


def test_inspect_refuses_a_wav_without_settings_in_one_line(runs, capsys):
    with pytest.raises(SystemExit) as e:
        inspect_main([str(runs["f5"] / "reference.wav")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and "holds no synthesis settings" in err


def test_checkpoint_samples_record_their_settings(tmp_path):
    run = finetune(tmp_path, "s", "f5tts_tiny", "train.max_updates=1", "train.save_every=1", "train.log_samples=true",
                   "train.sample_nfe_step=5", "train.sample_use_epss=false")
    manifest = yaml.safe_load((run / "manifest.yaml").read_text())
    gen = wav_settings(run / "samples" / "update_00000001_gen.wav")
    assert gen == gen | {"kind": "checkpoint sample", "run": str(run), "checkpoint": "model_00000001.safetensors",
                         "update": 1, "manifest_sha256": manifest["sha256"], "weights": "ema",
                         "seed": manifest["config"]["train"]["seed"], "nfe_step": 5, "use_epss": False,
                         "cfg_strength": 2.0, "sway_sampling_coef": -1.0, "vocoder": "griffinlim"}
    assert gen["ref_text"] == gen["gen_text"] == manifest["reference"]["text"]
    # the one sampling path: python -m infer, given the settings the sample records, makes the same wav
    again = infer(*reproduce_args(gen), f"out={tmp_path / 'again.wav'}")
    assert (sf.read(str(again))[0] == sf.read(str(run / "samples" / "update_00000001_gen.wav"))[0]).all()
    ref = wav_settings(run / "samples" / "update_00000001_ref.wav")
    assert "vocoder alone" in ref["kind"] and ref["seed"] is None and ref["manifest_sha256"] == manifest["sha256"]


def test_a_wav_from_an_exported_file_names_it_and_reproduces(runs, tmp_path):
    model_file = infer("export", f"run={runs['f5']}", f"out={tmp_path / 'voice.safetensors'}")
    out = infer(f"model_file={model_file}", "nfe_step=2", "seed=3", f"out={tmp_path / 'a.wav'}")
    got = wav_settings(out)
    assert (got["run"], got["checkpoint"], got["update"], got["weights"]) == (None, str(model_file), 4, "ema")
    again = infer(*reproduce_args(got), f"out={tmp_path / 'again.wav'}")
    assert (sf.read(str(again))[0] == sf.read(str(out))[0]).all()
