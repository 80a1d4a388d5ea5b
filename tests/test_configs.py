import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from finetune.lock.errors import UserError
from finetune.config import plain, precompose, register
from finetune.lock.schema import FinetuneConfig, PrepareConfig, check_ranges

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
register()


def composed(*overrides, name="finetune"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def resolve(cfg, schema=FinetuneConfig):
    return plain(cfg, schema)


def test_all_required_models_exist():
    assert {"e2tts", "f5tts", "f5tts_v0", "e2tts_small", "f5tts_small", "e2tts_tiny", "f5tts_tiny"} <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_composes_and_validates(model):
    cfg = resolve(composed(f"model={model}"))
    assert cfg["model"]["name"] == model
    assert cfg["model"]["backbone"] in ("DiT", "UNetT", "MMDiT")
    assert cfg["pretrained"] == cfg["model"]["pretrained"]


def test_real_models_name_their_upstream_checkpoint():
    for model, url in [("f5tts", "F5TTS_v1_Base/"), ("f5tts_v0", "F5TTS_Base/"), ("e2tts", "E2TTS_Base/")]:
        assert url in resolve(composed(f"model={model}"))["pretrained"]
        assert resolve(composed(f"model={model}"))["pretrained"].startswith("hf://")


def test_every_group_option_composes():
    for group in ("data", "optim", "train", "logger", "vocoder"):
        for option in (CONF / group).glob("*.yaml"):
            overrides = ["model=f5tts_tiny", f"{group}={option.stem}"]
            if option.stem == "custom":
                overrides.append("data.path=/somewhere")
            cfg = resolve(composed(*overrides))
            assert cfg[group]
            check_ranges(cfg)


def test_misspelled_key_fails_with_its_name():
    with pytest.raises(Exception, match="max_updatez"):
        composed("model=f5tts_tiny", "train.max_updatez=3")


def test_wrong_type_fails_with_its_key():
    with pytest.raises(Exception, match="max_updates"):
        composed("model=f5tts_tiny", "train.max_updates=many")


@pytest.mark.parametrize("override", ["train.save_every=0", "train.log_every=0", "optim.grad_accumulation_steps=0",
                                      "train.keep_last_n=0", "train.keep_last_n=-2", "train.max_updates=0",
                                      "optim.lr=-1", "data.frames_per_batch=0", "train.ema.update_every=0"])
def test_out_of_range_numbers_are_refused_by_key(override):
    key = override.split("=")[0]
    check_ranges(resolve(composed("model=f5tts_tiny", f"{key}=1")))  # the same key in range passes
    with pytest.raises(UserError, match=f"^{re.escape(key)}=-?[0-9.]+: "):
        check_ranges(resolve(composed("model=f5tts_tiny", override)))


def test_mixed_precision_is_one_of_three():
    for value in ("no", "fp16", "bf16"):
        assert resolve(composed("model=f5tts_tiny", f"train.mixed_precision={value}"))["train"]["mixed_precision"] == value
    with pytest.raises(Exception, match="train.mixed_precision=bf17"):
        composed("model=f5tts_tiny", "train.mixed_precision=bf17")


def test_precheck_is_one_line_and_leaves_hydra_flags_and_globs_to_hydra():
    with pytest.raises(UserError, match="Key 'epoch' not in 'TrainConfig'.*--help"):
        precompose("finetune", ["-m", "model=f5tts_tiny,e2tts_tiny", "train.epoch=1,2"], "--help")
    with pytest.raises(UserError, match="Could not find 'logger/wandbx'"):
        precompose("finetune", ["model=f5tts_tiny", "logger=wandbx"], "--help")
    for argv in (["model=f5tts_tiny", "-c", "job"], ["--config-dir", "/elsewhere", "data=mine"],
                 ["-m", "model=f5tts_tiny", "data=glob(d*)"], ["-m", "model=f5tts_tiny", "train.seed=range(1,3)"]):
        precompose("finetune", argv, "--help")  # no error: Hydra itself reads these


def test_added_key_is_refused_too():
    with pytest.raises(UserError, match="bogus"):
        resolve(composed("model=f5tts_tiny", "+train.bogus=1"))


def test_backbone_outside_allow_list_is_refused():
    with pytest.raises(Exception, match="backbone"):
        resolve(composed("model=f5tts_tiny", "model.backbone=torch.nn.Linear"))


def test_prepare_config_takes_mel_settings_from_the_model_and_checks_keys():
    cfg = resolve(composed("input=a.csv", "out=ds", "model=e2tts", name="prepare"), PrepareConfig)
    assert cfg["model"]["mel"]["n_mel_channels"] == 100 and cfg["min_seconds"] == 0.3 and not cfg["strict"]
    with pytest.raises(UserError, match="out"):
        resolve(composed("input=a.csv", name="prepare"), PrepareConfig)
    with pytest.raises(UserError, match="bogus"):
        resolve(composed("input=a.csv", "out=ds", "+bogus=1", name="prepare"), PrepareConfig)
