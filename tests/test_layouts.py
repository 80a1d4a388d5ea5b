"""Pretrained checkpoints in every upstream layout, made here from a tiny model; files that are not
checkpoints get a one-line refusal; our files carry tensor hashes that catch a flipped bit."""
import shutil

import pytest
import torch
from safetensors.torch import save_file

from finetune.lock.checkpoints import DamagedFile, file_shapes, list_checkpoints, load_weights, read_upstream
from finetune.lock.errors import UserError
from tests.conftest import finetune, infer
from bench.makers import ema_prefixed, tiny_state, write_layouts


def test_every_layout_reads_back_the_ema_weights(tmp_path):
    sd = tiny_state()
    for name, path in write_layouts(tmp_path, sd).items():
        got = read_upstream(path)
        assert got.keys() == sd.keys(), name
        assert all(torch.equal(got[k], sd[k]) for k in sd), name


def test_finetune_starts_from_each_layout(tmp_path):
    sd = tiny_state(seed=3)
    paths = write_layouts(tmp_path, sd)
    # as upstream's Trainer: the model starts from the file's online weights where it has them (the trainer
    # file's are sd + 1), else from its EMA (the hub file's only set)
    for name, start in (("trainer.pt", {k: v + 1 for k, v in sd.items()}), ("hub.safetensors", sd)):
        run = finetune(tmp_path / "runs", name.replace(".", "_"), "f5tts_tiny", f"pretrained={paths[name]}",
                       "train.max_updates=1", "optim.lr=1e-30")
        online = load_weights(list_checkpoints(run)[1], "online")
        assert all(torch.allclose(online[k], start[k]) for k in sd), name  # lr ~0: the pretrained weights
        assert f"file: {name}" in (run / "manifest.yaml").read_text()


def test_other_family_pretrained_stops_before_training(tmp_path):
    path = tmp_path / "e2.safetensors"
    save_file({k: v.contiguous() for k, v in ema_prefixed(tiny_state("e2tts_tiny")).items()}, str(path))
    with pytest.raises(UserError, match="is an E2-TTS model.*model=f5tts_tiny is F5-TTS"):
        finetune(tmp_path / "runs", "x", "f5tts_tiny", f"pretrained={path}")
    assert not (tmp_path / "runs" / "x").exists()


@pytest.mark.parametrize("content", ["list", "tensor", "payload", "junk"])
def test_files_that_are_not_state_dicts_are_refused_in_one_line(tmp_path, content):
    import pickle

    path = tmp_path / f"{content}.pt"
    if content == "list":
        torch.save([torch.zeros(2)], path)
    elif content == "tensor":
        torch.save(torch.zeros(2), path)
    elif content == "payload":  # a pickle that would run a command if it were ever unpickled unsafely
        class Payload:
            def __reduce__(self):
                return (shutil.rmtree, (str(tmp_path / "victim"),))

        (tmp_path / "victim").mkdir()
        path.write_bytes(pickle.dumps({"model_state_dict": Payload()}))
    else:
        path.write_bytes(b"\x00not a checkpoint" * 10)
    for read in (read_upstream, file_shapes):
        with pytest.raises(UserError) as e:
            read(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value)
    with pytest.raises(UserError):
        finetune(tmp_path / "runs", content, "f5tts_tiny", f"pretrained={path}")
    if content == "payload":
        assert (tmp_path / "victim").is_dir()  # nothing executed


def test_a_flipped_bit_in_tensor_data_is_caught(runs, tmp_path):
    """The header is intact, so shapes check out: only the recorded tensor hash can tell."""
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    path = list_checkpoints(run)[4]
    flip(path, "ema.transformer.proj_out.weight")
    with pytest.raises(DamagedFile, match="its ema weights do not match the sha256 recorded"):
        load_weights(path, "ema")
    assert load_weights(path, "online")  # the other set is intact
    with pytest.raises(DamagedFile, match="do not match the sha256 recorded"):
        infer(f"run={run}", "nfe_step=1", f"out={tmp_path / 'x.wav'}")
    with pytest.raises(DamagedFile):
        infer("export", f"run={run}", f"out={tmp_path / 'x.safetensors'}")
    with pytest.raises(DamagedFile):
        finetune(tmp_path, "from-flipped", "f5tts_tiny", f"pretrained={run}")

    exported = infer("export", f"run={runs['f5']}", f"out={tmp_path / 'e.safetensors'}")  # an export is checked too
    flip(exported, "transformer.proj_out.weight")
    with pytest.raises(DamagedFile, match="its ema weights do not match the sha256 recorded"):
        infer(f"model_file={exported}", "nfe_step=1", f"out={tmp_path / 'e.wav'}")


def flip(path, key: str) -> None:
    """One bit flipped in the middle of a tensor's data; the header stays intact."""
    import json
    import struct

    data = bytearray(path.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    start, end = json.loads(data[8:8 + n])[key]["data_offsets"]
    data[8 + n + (start + end) // 2] ^= 0x01
    path.write_bytes(bytes(data))
