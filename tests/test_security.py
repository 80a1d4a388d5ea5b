"""Files from elsewhere are data, never code: nothing read from a run folder, checkpoint, vocoder folder or
dataset is unpickled or instantiated by class path, no path in them escapes their folder, and every command
that creates a run keeps it inside run.root. (Forged manifests and checkpoint payloads: test_manifest.py,
test_layouts.py.)"""
import json
import pickle
import shutil

import pytest
import torch
import yaml

from finetune.lock.errors import UserError
from tests.conftest import finetune, infer
from bench.makers import tiny_state, write_layouts
from bench.makers import write_vocos


def adopt(*args):
    from finetune.__main__ import run

    return run(["adopt", *args])[0]


@pytest.mark.parametrize("name", ["../escaped", "/tmp/absolute", "a/b", "..", ""])
def test_no_command_creates_a_run_outside_run_root(tmp_path, name):
    paths = write_layouts(tmp_path, tiny_state())
    root = tmp_path / "runs"
    with pytest.raises(UserError, match="run.name"):
        adopt(f"ckpt={paths['hub.safetensors']}", "model=f5tts_tiny", f"run.root={root}", f"run.name={name}")
    with pytest.raises(UserError, match="run.name"):
        finetune(root, name, "f5tts_tiny")
    assert not (tmp_path / "escaped").exists() and not list(root.glob("**/manifest.yaml"))


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):  # what unpickling would do: delete the target folder
        return (shutil.rmtree, (self.target,))


@pytest.mark.parametrize("content", ["payload", "list", "tensor", "wrong shapes"])
def test_a_hostile_vocoder_file_is_refused_in_one_line(runs, tmp_path, content):
    folder = write_vocos(tmp_path / "vocos", dim=16, intermediate_dim=32, num_layers=1)
    victim = tmp_path / "victim"
    victim.mkdir()
    weights = folder / "pytorch_model.bin"
    if content == "payload":
        weights.write_bytes(pickle.dumps({"backbone.embed.weight": Payload(str(victim))}))
    elif content == "list":
        torch.save([torch.zeros(1)], weights)
    elif content == "tensor":
        torch.save(torch.zeros(1), weights)
    else:
        torch.save({"backbone.embed.weight": torch.zeros(1)}, weights)
    with pytest.raises(UserError) as e:
        infer(f"run={runs['f5']}", "vocoder=vocos", f"vocoder_path={folder}", "nfe_step=1")
    assert str(weights) in str(e.value) and "\n" not in str(e.value)
    assert victim.is_dir()  # nothing ran


def test_a_vocoder_config_names_no_class_and_no_alias_bomb(runs, tmp_path):
    folder = write_vocos(tmp_path / "vocos", dim=16, intermediate_dim=32, num_layers=1)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    for change, needle in ((lambda c: c["backbone"].update(class_path="os.system"), "backbone must be"),
                           (lambda c: c["head"].update(init_args={"command": "touch /tmp/x"}), "init_args do not fit"),
                           (lambda c: c.clear(), "feature_extractor must be")):
        broken = json.loads(json.dumps(config))
        change(broken)
        (folder / "config.yaml").write_text(yaml.safe_dump(broken))
        with pytest.raises(UserError, match=needle):
            infer(f"run={runs['f5']}", "vocoder=vocos", f"vocoder_path={folder}", "nfe_step=1")
    (folder / "config.yaml").write_text("a: &a [1, 2]\nb: *a\n")
    with pytest.raises(UserError, match="anchors and aliases"):
        infer(f"run={runs['f5']}", "vocoder=vocos", f"vocoder_path={folder}", "nfe_step=1")


def test_a_forged_dataset_cannot_point_outside_its_folder(tmp_path):
    from finetune.media.dataset import prepared_clips
    from bench.makers import spec_of
    from bench.makers import write_clips, write_metadata
    from tests.test_runs_data import prepare

    ds = prepare(write_metadata(tmp_path / "m.csv", write_clips(tmp_path / "src", 2, seed=1)), tmp_path / "ds")
    data = json.loads((ds / "dataset.json").read_text())
    for change, needle in ((lambda d: d["clips"][0].update(mel="../../etc/passwd"), r"clips\[0\]"),
                           (lambda d: d["clips"][0].update(frames="many"), r"clips\[0\]"),
                           (lambda d: d.update(clips=[]), "clips: missing or empty"),
                           (lambda d: d["summary"].pop("mel"), "summary: needs mel")):
        forged = json.loads(json.dumps(data))
        change(forged)
        (ds / "dataset.json").write_text(json.dumps(forged))
        with pytest.raises(UserError, match=needle):
            prepared_clips(ds, spec_of("f5tts_tiny"))


def test_an_export_with_a_forged_manifest_is_refused(runs, tmp_path):
    from safetensors.torch import load_file, save_file

    from finetune.lock.checkpoints import header

    out = infer("export", f"run={runs['f5']}", f"out={tmp_path / 'x.safetensors'}")
    _, meta = header(out)
    meta["manifest"] = meta["manifest"].replace("dim: 64", "dim: 640")
    save_file(load_file(str(out)), str(tmp_path / "forged.safetensors"), metadata=meta)
    with pytest.raises(UserError, match="embedded manifest.*does not match"):
        infer(f"model_file={tmp_path / 'forged.safetensors'}", "nfe_step=1")
