"""Nothing written is lost or corrupted: a run that goes non-finite stops before saving it, inference never
writes over what it did not make, a torn amendment is recovered, and files that do not belong in a run are
left alone."""
import json
import os
import shutil

import pytest
import soundfile as sf

from finetune.media.audio import write_wav
from finetune.lock.checkpoints import header, list_checkpoints, load_weights
from finetune.lock.errors import UserError
from tests.conftest import finetune, infer


def resume(run, *overrides):
    from finetune.__main__ import run as run_command

    return run_command([f"resume={run}", *overrides])[1]


def test_a_run_that_goes_non_finite_stops_and_keeps_its_good_checkpoints(runs, tmp_path):
    """An absurd step size blows the weights up; training stops at the first non-finite loss or gradient,
    names that update, saves nothing after it and prunes nothing (it used to save 603,912 NaN values and exit 0)."""
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    before = {u: p.read_bytes() for u, p in list_checkpoints(run).items()}
    with pytest.raises(UserError, match=r"update [56]: the loss or gradient is not finite.*last good checkpoint is "
                                        r"update 4.*resume="):
        resume(run, "optim.lr=1e30", "train.max_updates=8", "train.save_every=2", "train.keep_last_n=1")
    assert {u: p.read_bytes() for u, p in list_checkpoints(run).items()} == before
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "crashed" and "not finite" in status["message"]
    for w in ("ema", "online"):
        assert all(t.isfinite().all() for t in load_weights(list_checkpoints(run)[4], w).values())


def test_inference_writes_only_wavs_outside_run_folders_and_never_over_a_file_it_did_not_write(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    ckpt = list_checkpoints(run)[4]
    before = ckpt.read_bytes(), (run / "reference.wav").read_bytes()
    for out, needle in ((ckpt, "ending in .wav"), (run / "reference.wav", "inside the run folder"),
                        (run / "checkpoints" / "x.wav", "inside the run folder"), (tmp_path / "x.mp3", "ending in .wav")):
        with pytest.raises(UserError, match=needle):
            infer(f"run={run}", f"out={out}", "nfe_step=1")
    assert (ckpt.read_bytes(), (run / "reference.wav").read_bytes()) == before
    mine = tmp_path / "my_recording.wav"
    sf.write(mine, [0.1] * 2400, 24000)  # a file of the user's, not this tool's
    with pytest.raises(UserError, match="not a wav this tool wrote.*overwrite=true"):
        infer(f"run={run}", f"out={mine}", "nfe_step=1")
    assert sf.info(str(mine)).frames == 2400
    assert infer(f"run={run}", f"out={mine}", "nfe_step=1", "overwrite=true") == mine  # asked for: replaced
    again = infer(f"run={run}", f"out={mine}", "nfe_step=1", "seed=3")  # now it is ours: replaced freely
    assert sf.info(str(again)).frames > 2400
    assert infer(f"run={run}", f"out={run / 'samples' / 'mine.wav'}", "nfe_step=1").parent == run / "samples"
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_a_torn_last_amendment_is_recovered_with_a_warning(runs, tmp_path, capsys):
    """Killed while appending an amendment (before it trained anything), a resume used to be refused forever
    with a "restore from a backup" that did not exist."""
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    resume(run, "train.max_updates=5")
    whole = (run / "amendments.jsonl").read_bytes()
    (run / "amendments.jsonl").write_bytes(whole + whole[: len(whole) // 2])
    resume(run, "train.max_updates=6")
    assert "last line was cut short" in capsys.readouterr().err
    lines = (run / "amendments.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["changes"] == {"train.max_updates": [5, 6]}
    (run / "amendments.jsonl").write_text(lines[0].replace("5", "7") + "\n" + lines[1] + "\n")  # an edit, not a tear
    with pytest.raises(UserError, match="line 1 is edited"):
        resume(run, "train.max_updates=9")


def test_a_checkpoint_bound_to_another_run_is_left_alone(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    stray = run / "checkpoints" / "model_00000009.safetensors"
    shutil.copy(list_checkpoints(runs["e2"])[4], stray)
    before = stray.read_bytes()
    with pytest.raises(UserError, match="belongs to run 'e2'.*does not belong in.*move it out"):
        resume(run, "train.max_updates=12")
    assert stray.read_bytes() == before and not list(run.glob("checkpoints/*.damaged"))
    with pytest.raises(UserError, match="pretrained=.*belongs to run 'e2'"):
        finetune(tmp_path, "from-mixed", "f5tts_tiny", f"pretrained={run}")
    # unbound (hand-placed): a LoRA run from it would train, then be refused by inference, so refused here
    from safetensors.torch import load_file, save_file

    save_file(load_file(list_checkpoints(run)[4]), stray, metadata={"format": "pt"})
    with pytest.raises(UserError, match="pretrained=.*carries no run binding.*pretrained=<its path>"):
        finetune(tmp_path, "from-unbound", "f5tts_tiny", f"pretrained={run}", "adapter=lora")
    assert not (tmp_path / "from-unbound").exists()


def test_resume_checks_it_can_write_before_training(runs, tmp_path):
    run = shutil.copytree(runs["f5"], tmp_path / "r")
    (run / "train.log").unlink()
    (run / "train.log").mkdir()  # not writable as a file, as root too
    with pytest.raises(UserError, match="train.log: cannot be written"):
        resume(run, "train.max_updates=6")
    assert sorted(list_checkpoints(run)) == [2, 4] and not (run / "amendments.jsonl").exists()


def test_a_run_folder_that_cannot_be_made_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "a_file").write_text("mine")
    for root, name, needle in ((tmp_path / "a_file", "x", "is a file, not a folder"), ("/proc/f5tune", "x", "cannot create"),
                               (tmp_path, "n" * 300, "over the 255")):
        with pytest.raises(UserError, match=needle):
            finetune(root, name, "f5tts_tiny")
    assert (tmp_path / "a_file").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_checkpoint_files_written_by_hand_or_cut_short_are_never_taken_for_checkpoints(runs, tmp_path):
    from finetune.lock.checkpoints import DamagedFile

    path = tmp_path / "model_00000001.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}")
    with pytest.raises(DamagedFile):
        header(path)
    write_wav(tmp_path / "w.wav", __import__("torch").zeros(100), 24000)
    with pytest.raises(DamagedFile):
        header(tmp_path / "w.wav")
    os.truncate(path, 3)
    with pytest.raises(DamagedFile):
        header(path)


def test_a_whole_checkpoint_that_will_not_load_stops_the_resume_and_is_not_renamed(runs, tmp_path):
    """Only real damage (cut short, unparsable, failing its hash) counts: a whole training state that this
    torch refuses to unpickle (another version's format, a bug) used to get intact checkpoints renamed
    *.damaged and the run resumed from an older one."""
    from finetune.lock.checkpoints import state_path

    run = shutil.copytree(runs["f5"], tmp_path / "r")
    state = torch_load(state_path(run, 4))
    state["extra"] = Unknown()  # a whole zip that weights_only loading refuses
    __import__("torch").save(state, state_path(run, 4))
    with pytest.raises(UserError, match="a whole file that torch .* will not load"):
        resume(run, "train.max_updates=6")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "model_00000002.safetensors", "model_00000004.safetensors", "state_00000002.pt", "state_00000004.pt"]


class Unknown:
    pass


def torch_load(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
