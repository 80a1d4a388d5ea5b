"""What each command offers is one list, derived from its schema (lock/schema.options): its --help prints it,
README's tables of keys are it (docs/keys.py writes them; this test holds README to it)."""
import importlib.util

import pytest

from finetune.lock.schema import from_argv, options
from infer.config import InferConfig, ScoreConfig
from tests.conftest import REPO


def keys_module():
    spec = importlib.util.spec_from_file_location("keys", REPO / "docs" / "keys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_of_keys_are_the_schemas():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    keys = keys_module()
    for command in keys.tables():
        assert keys.block(command).search(readme), f"README has no table of {command}'s keys"
    assert keys.written(readme) == readme, "README's tables of keys differ from the schemas: run python docs/keys.py"


def test_options_walk_sections_with_kinds_bounds_choices_and_comments():
    rows = {o["key"]: o for o in options(ScoreConfig)}
    assert {"asr.model", "asr.language", "speaker.model", "nfe_step", "quality"} <= rows.keys()
    assert rows["nfe_step"]["bounds"] == {"gt": 0} and "flow steps" in rows["nfe_step"]["doc"]
    assert rows["vocoder"]["choices"] == ["vocos", "griffinlim"]
    from finetune.lock.schema import FinetuneConfig

    train = {o["key"]: o for o in options(FinetuneConfig)}
    assert train["optim.lr"]["kind"] == "training" and train["optim.name"]["kind"] == "fixed"
    assert train["model.arch.checkpoint_activations"]["kind"] == "runtime"
    assert train["train.early_stop.patience"]["kind"] == "training"


@pytest.mark.parametrize("schema, command", [(InferConfig, "python -m infer"), (ScoreConfig, "python -m infer.score")])
def test_help_lists_every_key(schema, command, capsys):
    with pytest.raises(SystemExit) as e:
        from_argv(["--help"], schema, command)
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f"usage: {command} key=value")
    assert all(f"  {o['key']}=" in out for o in options(schema))
