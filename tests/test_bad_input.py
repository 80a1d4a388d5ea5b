"""Bad input to inference and export: one line naming the key or file and what to do, nothing written.
(Config ranges for fine-tuning: test_configs.py; preparation: test_prepare_checks.py.)"""
import pytest
import soundfile as sf

from finetune.lock.errors import UserError
from tests.conftest import infer
from bench.makers import speechlike


@pytest.mark.parametrize("args, needle", [
    (["gen_text="], "gen_text is empty"),
    (["gen_text=😀😀😀"], "gen_text: 1 symbols are not in the run's vocab ('😀')"),
    (["gen_text=Hello ☃ world"], "accept_unknown=true"),
    (["speed=1e-9"], "raise speed"),
    (["speed=nan"], "speed=nan: must be a finite number"),
    (["cfg_strength=nan"], "cfg_strength=nan: must be a finite number"),
    (["sway_sampling_coef=inf"], "sway_sampling_coef=inf: must be a finite number"),
    (["seed=-1"], "seed=-1: must be at least 0"),
    (["seed=4294967296"], "seed=4294967296: must be below 4294967296"),
    (["nfe_step=0"], "nfe_step=0: must be above 0"),
    (["device=meta"], "device=meta: not a device to run on"),
    (["device=cuda:7"], "CUDA is not available"),
    (["weights=both"], "weights='both': must be one of ema, online"),
    (["out=x.mp3"], "ending in .wav"),
    (["out=/sys/f5tune.wav"], "out=/sys/f5tune.wav: cannot write there"),
    (["ref_audio=/nonexistent.wav", "ref_text=hi"], "not found"),
    (["ref_audio=REF", "ref_text="], "ref_text= is required"),
    (["ckpt=99"], "no checkpoint ckpt=99"),
    (["nfe=3"], "nfe: not a key of python -m infer"),
    (["run"], "expected key=value"),
])
def test_inference_refusals(runs, tmp_path, args, needle):
    args = [a.replace("REF", str(runs["f5"] / "reference.wav")) for a in args]
    with pytest.raises(UserError) as e:
        infer(f"run={runs['f5']}", "nfe_step=1", *args)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_symbols_may_be_accepted_as_upstream_does(runs, tmp_path):
    out = infer(f"run={runs['f5']}", "nfe_step=1", "gen_text=Hello ☃ world.", "accept_unknown=true",
                f"out={tmp_path / 'snowman.wav'}")
    assert sf.info(str(out)).duration > 0.5


def test_a_reference_too_short_to_clone_is_refused(runs, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, speechlike(0.01), 24000)
    with pytest.raises(UserError, match="0.01 s of reference; give at least 0.5 s"):
        infer(f"run={runs['f5']}", f"ref_audio={short}", "ref_text=Hi.", f"out={tmp_path / 'x.wav'}")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    with pytest.raises(UserError, match="cannot read audio"):
        infer(f"run={runs['f5']}", f"ref_audio={bad}", "ref_text=hi")


def test_run_or_model_file_exactly_one(runs, tmp_path):
    with pytest.raises(UserError, match="pass one of run="):
        infer("nfe_step=1")
    with pytest.raises(UserError, match="no such run folder"):
        infer(f"run={tmp_path / 'none'}")
    with pytest.raises(UserError, match="is a folder"):
        infer(f"run={runs['f5']}", f"out={tmp_path}")


def test_export_refusals(runs, tmp_path):
    for args, needle in ((["out=x.pt"], "must end in .safetensors"), ([], "export needs run="),
                         (["out=/sys/f5tune.safetensors"], "cannot write"), (["out=OUT", "weights=x"], "weights='x'")):
        args = [a.replace("OUT", str(tmp_path / "e.safetensors")) for a in args]
        with pytest.raises(UserError, match=needle):
            infer("export", *([f"run={runs['f5']}"] if args else []), *args)
    assert not list(tmp_path.iterdir())


def test_an_exception_without_a_message_still_gives_a_one_line_reason():
    from finetune.lock.errors import first_line

    assert first_line(ValueError()) == "ValueError"  # peft and torch raise some without a message
    assert first_line(ValueError("\n  first\nsecond")) == "first"
    assert first_line(OSError("a" * 500), 80) == "a" * 80
