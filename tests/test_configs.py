"""Configs: every option composes and validates; keys, types and ranges are refused by name before anything
is written; each key's kind (what it is to a run) is declared once, on the schema."""
import re

import pytest

from finetune.config import CONF_DIR, apply_overrides, compose_config, finetune_config, plain, precompose
from finetune.lock.errors import UserError
from finetune.lock.schema import (FIXED, MODEL, RUNTIME, TRAINING, FinetuneConfig, check, kind_of,
                                  model_keys)

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def test_all_required_models_exist():
    assert {"e2tts", "f5tts", "f5tts_v0", "e2tts_small", "f5tts_small", "e2tts_tiny", "f5tts_tiny"} <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_composes_and_validates(model):
    cfg = finetune_config([f"model={model}"])
    assert cfg["model"]["name"] == model
    assert cfg["model"]["backbone"] in ("DiT", "UNetT", "MMDiT")
    assert cfg["pretrained"] == cfg["model"]["pretrained"]
    assert cfg["run"]["name"].startswith(f"{model}-demo-")  # ${now:...}: <model>-<data>-<time>


def test_inherited_configs_keep_upstream_architectures():
    """Configs inherit (defaults: [f5tts]); what they resolve to is upstream's architecture, key by key."""
    arch = {m: finetune_config([f"model={m}"])["model"]["arch"] for m in ("f5tts", "f5tts_small", "f5tts_v0", "e2tts",
                                                                         "e2tts_small", "f5tts_v0_tiny")}
    assert (arch["f5tts_small"]["dim"], arch["f5tts_small"]["depth"], arch["f5tts_small"]["heads"]) == (768, 18, 12)
    assert arch["f5tts_small"]["text_dim"] == 512 and arch["f5tts_small"]["conv_layers"] == 4
    assert arch["f5tts_v0"] == {**arch["f5tts"], "text_mask_padding": False, "pe_attn_head": 1}
    assert (arch["e2tts_small"]["dim"], arch["e2tts_small"]["depth"], arch["e2tts_small"]["ff_mult"]) == (768, 20, 4)
    assert arch["f5tts_v0_tiny"]["dim"] == 64 and arch["f5tts_v0_tiny"]["text_mask_padding"] is False


MIRRORS = [m for m in MODELS if finetune_config([f"model={m}"])["model"]["upstream"]]


@pytest.mark.parametrize("model", MIRRORS)
def test_a_config_naming_an_upstream_config_builds_that_model(model):
    """`upstream: X` means f5_tts/configs/X.yaml of the installed f5-tts, read here: the same backbone and
    tokenizer, and every constructor argument (both sides filled with upstream's defaults) and mel setting."""
    from importlib.resources import files

    import yaml

    from finetune.lock.builder import model_spec
    from bench.makers import VOCAB

    ours = finetune_config([f"model={model}"])["model"]
    theirs = yaml.safe_load((files("f5_tts") / "configs" / f"{ours['upstream']}.yaml").read_text())["model"]
    assert (ours["backbone"], ours["tokenizer"]) == (theirs["backbone"], theirs["tokenizer"])
    mine = model_spec(ours, VOCAB)
    upstream = model_spec({**ours, "arch": theirs["arch"], "mel": theirs["mel_spec"]}, VOCAB)
    assert (mine["arch"], mine["mel"]) == (upstream["arch"], upstream["mel"])
    assert set(MIRRORS) >= {"f5tts", "f5tts_v0", "f5tts_small", "e2tts", "e2tts_small"}


def test_real_models_name_their_upstream_checkpoint():
    for model, url in [("f5tts", "F5TTS_v1_Base/"), ("f5tts_v0", "F5TTS_Base/"), ("e2tts", "E2TTS_Base/")]:
        pretrained = finetune_config([f"model={model}"])["pretrained"]
        assert url in pretrained and pretrained.startswith("hf://")


def test_experiment_demo_is_one_word_for_the_demo_settings():
    cfg = finetune_config(["model=f5tts_tiny", "experiment=demo"])
    assert (cfg["data"]["name"], cfg["train"]["max_updates"], cfg["optim"]["lr"], cfg["vocoder"]["kind"]) == \
        ("demo", 150, 1e-3, "griffinlim")
    assert cfg["train"]["log_every"] == 10 and cfg["optim"]["weight_decay"] == 0.01  # inherited from the defaults
    assert finetune_config(["model=f5tts_tiny", "experiment=demo", "optim.lr=5e-4"])["optim"]["lr"] == 5e-4


def test_every_group_option_composes():
    for group in ("data", "optim", "train", "logger", "vocoder", "experiment"):
        for option in (CONF_DIR / group).glob("*.yaml"):
            overrides = ["model=f5tts_tiny", f"{group}={option.stem}"]
            if option.stem == "custom":
                overrides.append("data.path=/somewhere")
            assert finetune_config(overrides)


def test_custom_data_needs_its_path():
    with pytest.raises(UserError, match="data.path"):
        finetune_config(["model=f5tts_tiny", "data=custom"])


def test_misspelled_key_wrong_type_and_unknown_option_are_one_line():
    for override, needle in (("train.max_updatez=3", "Key 'max_updatez' not in 'TrainConfig'"),
                             ("train.max_updates=many", "max_updates"),
                             ("logger=wandbx", "Could not find 'logger/wandbx'"),
                             ("train.mixed_precision=bf17", "mixed_precision"),
                             ("+train.bogus=1", "bogus"),
                             ("model.backbone=torch.nn.Linear", "backbone")):
        with pytest.raises(UserError, match=re.escape(needle)) as e:
            finetune_config(["model=f5tts_tiny", override])
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("override", [
    "train.save_every=0", "train.log_every=0", "optim.grad_accumulation_steps=0", "train.keep_last_n=0",
    "train.keep_last_n=-2", "train.max_updates=0", "optim.lr=-1", "optim.lr=0", "optim.lr=nan", "optim.lr=inf",
    "data.frames_per_batch=0", "train.ema.update_every=0", "train.ema.beta=2", "train.seed=-1",
    "train.seed=1180591620717411303424", "model.arch.heads=0", "model.arch.dim=-64", "model.arch.depth=0",
    "model.mel.hop_length=0", "model.mel.target_sample_rate=-1", "model.mel.n_mel_channels=0", "vocoder.n_iter=0",
    "run.name=", "run.root="])
def test_out_of_range_values_are_refused_by_key(override):
    key = override.split("=")[0]
    with pytest.raises(UserError, match=f"^{re.escape(key)}"):
        finetune_config(["model=f5tts_tiny", override])


def test_non_ascii_run_name_unquoted_says_how_to_quote():
    with pytest.raises(UserError, match="quote a value"):
        finetune_config(["model=f5tts_tiny", "run.name=café"])
    assert finetune_config(["model=f5tts_tiny", 'run.name="café"'])["run"]["name"] == "café"


def test_precheck_leaves_hydra_flags_and_globs_to_hydra():
    with pytest.raises(UserError, match="Key 'epoch' not in 'TrainConfig'.*--help"):
        precompose("finetune", ["-m", "model=f5tts_tiny,e2tts_tiny", "train.epoch=1,2"], "--help")
    for argv in (["model=f5tts_tiny", "-c", "job"], ["--config-dir", "/elsewhere", "data=mine"],
                 ["-m", "model=f5tts_tiny", "data=glob(d*)"], ["-m", "model=f5tts_tiny", "train.seed=range(1,3)"]):
        precompose("finetune", argv, "--help")  # no error: Hydra itself reads these


def test_our_own_bugs_are_not_dressed_as_config_errors(monkeypatch):
    """Only Hydra's and OmegaConf's exceptions become `config:` lines; anything else is a bug and surfaces."""
    import omegaconf

    def broken(*args, **kwargs):
        raise KeyError("a bug of ours")

    monkeypatch.setattr(omegaconf.OmegaConf, "to_container", broken)
    with pytest.raises(KeyError, match="a bug of ours"):
        plain(compose_config("finetune", ["model=f5tts_tiny"]), FinetuneConfig)


def test_kinds_are_declared_on_the_schema():
    assert kind_of("model.arch.dim") == MODEL and kind_of("model.mel.hop_length") == MODEL
    assert kind_of("model.arch.checkpoint_activations") == RUNTIME == kind_of("model.arch.attn_backend")
    assert kind_of("optim.lr") == TRAINING == kind_of("train.ema.beta") == kind_of("data.frames_per_batch")
    assert kind_of("optim.name") == FIXED == kind_of("data.path") == kind_of("vocab.extend") == kind_of("pretrained")
    assert kind_of("no.such.key") == FIXED
    assert {"model", "arch", "mel", "tokenizer", "backbone", "vocab", "pretrained"} <= model_keys()


def test_resume_overrides_go_through_hydra_and_the_schema():
    cfg = finetune_config(["model=f5tts_tiny"])
    assert apply_overrides(cfg, ["train=demo"])["train"]["max_updates"] == 150  # a group option, via Hydra
    assert apply_overrides(cfg, ["optim.lr=3e-4"])["optim"]["lr"] == 3e-4
    assert apply_overrides(cfg, ["logger.project=2024"])["logger"]["project"] == "2024"  # text stays text
    for bad, needle in (("logger.project=${oc.env:HOME}", "interpolation"), ("train=nope", "no such option"),
                        ("train.bogus=1", "bogus"), ("optim.lr=abc", "number")):
        with pytest.raises(UserError, match=re.escape(needle)):
            apply_overrides(cfg, [bad])


def test_a_config_read_back_is_checked_like_one_typed_in():
    cfg = finetune_config(["model=f5tts_tiny"])
    check(cfg, FinetuneConfig)
    cfg["model"]["arch"]["dim"] = "64"
    with pytest.raises(UserError, match="model.arch.dim='64': must be a whole number"):
        check(cfg, FinetuneConfig, "x")
