"""The web app's parts without a browser: each tool's quoting, the command that reproduces a run, the roots
every path is confined to, a run's state from status.json and its lock, metrics, and launches."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY
from finetune.app import commands, launch, runs
from finetune.app.__main__ import parse
from finetune.app.paths import Roots
from finetune.config import finetune_config, parse_override
from finetune.lock.errors import UserError
from finetune.lock.files import FolderLock
from finetune.lock.manifest import read_manifest
from finetune.lock.schema import flatten

# text a shell would act on, and text each parser could misread
NASTY = ["tiny; rm -rf canary $(touch pwned)", "it's", 'say "hi"', "both ' and \"", "tail\\", "back\\slash",
         'x\\"y', "a=b,c", "[1, 2]", "{a: b}", "true", "null", "1e-5", "# not a comment", "${oc.env:HOME}",
         "é 中文 ☃", "two\nlines", " padded ", "-m"]


@pytest.mark.parametrize("text", NASTY)
def test_hydra_value_reads_back_unchanged(text):
    assert parse_override(f"run.name={commands.hydra_value(text)}") == ("run.name", text)


def test_a_hostile_run_name_reaches_the_config_as_one_value(tmp_path):
    hostile = NASTY[0]
    argv = commands.finetune_args("f5tts_tiny", {"data": "demo", "run.root": str(tmp_path), "run.name": hostile})
    assert argv[:4] == [sys.executable, "-P", "-m", "finetune"] and sum(hostile in a for a in argv) == 1
    assert finetune_config(argv[4:])["run"]["name"] == hostile
    assert list(tmp_path.iterdir()) == []  # composing ran nothing


@pytest.mark.parametrize("text", [t for t in NASTY if t != "null"])  # null: infer's word for "the default"
def test_infer_receives_text_as_it_is(text):
    from infer.__main__ import parse as infer_parse

    argv = commands.infer_args({"run": "runs/x", "gen_text": text, "seed": 3})
    assert infer_parse(argv[4:])["gen_text"] == text


def test_reproduce_command_composes_each_run_config_again(runs):
    for run_dir in runs.values():
        config = read_manifest(run_dir)["config"]
        argv, warning = commands.reproduce_args(config)
        assert warning is None
        assert argv[:5] == [sys.executable, "-P", "-m", "finetune", f"model={config['model']['name']}"]
        assert len(argv) <= 5 + len(TINY) + 1  # group options and changed keys, not every key
        again = flatten(finetune_config(argv[4:]))
        assert {k: v for k, v in again.items() if k != "run.name"} == \
            {k: v for k, v in flatten(config).items() if k != "run.name"}


def test_reproduce_command_names_changed_keys_and_group_options():
    config = finetune_config(["model=f5tts_tiny", "data=custom", "data.path=/data/my voice", "optim.lr=0.002",
                              "train=demo", "train.save_every=7", "run.name=x"])
    argv, warning = commands.reproduce_args(config)
    assert warning is None
    assert {"data=custom", "train=demo", 'data.path="/data/my voice"', "optim.lr=0.002", "train.save_every=7"} \
        <= set(argv)
    again = finetune_config(argv[4:])
    assert again["data"] == config["data"] and again["train"] == config["train"] and again["optim"] == config["optim"]


@pytest.fixture
def roots(tmp_path):
    for sub in ("runs", "data", "uploads", "elsewhere"):
        (tmp_path / sub).mkdir()
    return Roots.make(tmp_path / "runs", tmp_path / "data", tmp_path / "uploads")


def test_paths_outside_the_roots_are_refused(roots, tmp_path):
    (roots.data / "clips").mkdir()
    (roots.data / "out").symlink_to(tmp_path / "elsewhere")
    (roots.data / "in").symlink_to(roots.data / "clips")
    assert roots.confine("clips", "input") == roots.data / "clips"
    assert roots.confine("clips/../clips", "input") == roots.data / "clips"
    assert roots.confine("in", "input") == roots.data / "clips"  # a link that stays inside is followed
    assert roots.confine(str(roots.uploads / "a.wav"), "ref_audio") == roots.uploads / "a.wav"
    for typed in ("../elsewhere", "clips/../../elsewhere", str(tmp_path / "elsewhere"), "/etc/passwd", "out",
                  "out/x.wav"):
        with pytest.raises(UserError, match="refused.*outside"):
            roots.confine(typed, "input")
    with pytest.raises(UserError, match="outside"):  # a root left out of those allowed
        roots.confine(str(roots.runs), "input", roots=(roots.data,))
    for bad in ("", "a\0b"):
        with pytest.raises(UserError):
            roots.confine(bad, "input")


def test_a_typed_model_is_a_hub_id_or_a_folder_under_the_roots(roots, tmp_path):
    (roots.data / "whisper").mkdir()
    (roots.data / "org" / "model").mkdir(parents=True)
    (roots.data / "link").symlink_to(tmp_path / "elsewhere")
    assert roots.model("  ", "asr.model") is None
    assert roots.model("openai/whisper-large-v3-turbo", "asr.model") == "openai/whisper-large-v3-turbo"
    assert roots.model("whisper", "asr.model") == str(roots.data / "whisper")
    assert roots.model("org/model", "asr.model") == str(roots.data / "org" / "model")  # the folder, not the hub id
    for typed in ("/etc", "../elsewhere", "link", "link/x", "./../elsewhere/x"):
        with pytest.raises(UserError, match="^asr.model=.*refused.*outside"):
            roots.model(typed, "asr.model")


def test_run_names_are_one_folder_under_the_runs_root(roots, tmp_path):
    for name in ("../elsewhere", "a/b", ".launch", "..", ""):
        with pytest.raises(UserError):
            roots.run_dir(name, must_exist=False)
    (roots.runs / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="link"):
        roots.run_dir("linked")
    with pytest.raises(UserError, match="no run folder"):
        roots.run_dir("missing")


def test_extra_settings_take_only_training_keys(roots, tmp_path):
    assert commands.check_extra("train.log_every=1\n\n# a comment\noptim=demo", roots.confine) == \
        ["train.log_every=1", "optim=demo"]
    for line in ("run.root=/tmp", "run.name=x", "hydra.run.dir=/tmp", "data.path=/etc", "model.arch.dim=8",
                 "pretrained=/etc/passwd", "-m", "train.", "logger=nope"):
        with pytest.raises(UserError):
            commands.check_extra(line, roots.confine)
    with pytest.raises(UserError, match="outside"):
        commands.check_extra(f"vocoder.path={tmp_path / 'elsewhere'}", roots.confine)
    (roots.data / "vocos").mkdir()
    assert commands.check_extra("vocoder.path=vocos", roots.confine) == [f"vocoder.path={roots.data / 'vocos'}"]
    with pytest.raises(UserError):  # a resume amends training keys only
        commands.check_extra("vocab.extend=true", roots.confine, amend_only=True)


def write_status(run_dir: Path, state: str) -> None:
    (run_dir / "status.json").write_text(json.dumps({"state": state, "pid": 1, "host": "h", "update": 3,
                                                     "planned": 9}))


def test_state_is_the_status_read_against_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("update 1 epoch 0 loss 1.0 lr 1e-3 grad_norm 0.5\n")
    assert runs.state(run_dir) == "interrupted"  # no status, nobody holding it, not done
    with FolderLock(run_dir, "test"):
        assert runs.state(run_dir) == "running"
        write_status(run_dir, "running")
        assert runs.state(run_dir) == "running"
    assert runs.state(run_dir) == "interrupted"  # said running, but its process is gone
    for said in ("finished", "stopped", "crashed"):
        write_status(run_dir, said)
        assert runs.state(run_dir) == said


def test_metrics_skip_a_torn_last_line(tmp_path):
    lines = [json.dumps({"update": u, "loss": 1.0 / u, "lr": 1e-3, "grad_norm": 0.1}) for u in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"update": 4, "lo')
    assert [r["update"] for r in runs.read_metrics(tmp_path)] == [1, 2, 3]
    assert runs.last_metrics(tmp_path)["update"] == 3


def test_diff_lists_differing_keys_first():
    rows = runs.diff({"a": 1, "m": {"x": 1, "y": 2}}, {"a": 1, "m": {"x": 5, "y": 2}, "z": None})
    assert [r[0] for r in rows] == ["m.x", "z", "a", "m.y"]
    assert rows[1][1:] == ["(absent)", "null", False]


def test_a_second_launch_of_a_name_is_refused_while_the_first_starts(roots):
    run_dir = roots.run_dir("twice", must_exist=False)
    argv = commands.finetune_args("f5tts_tiny", {"run.root": str(roots.runs), "run.name": "twice"})
    first = launch.launch_finetune(roots.runs, run_dir, argv)
    try:
        with pytest.raises(UserError, match="being launched already"):
            launch.launch_finetune(roots.runs, run_dir, argv)
        assert len(list((roots.runs / launch.PENDING).glob("twice.*"))) == 2  # its output and PID files
    finally:
        first.proc.kill()  # still importing: nothing written yet
        first.proc.wait()
    assert launch.settle_launch(first, run_dir)[0] == "refused"
    assert not run_dir.exists() and not list((roots.runs / launch.PENDING).iterdir())
    run_dir.mkdir()
    with pytest.raises(UserError, match="already exists"):
        launch.launch_finetune(roots.runs, run_dir, argv)


def test_stop_needs_a_running_process(roots):
    (roots.runs / "idle").mkdir()
    with pytest.raises(UserError, match="not running"):
        launch.stop(roots.runs / "idle")


def test_a_tool_run_in_data_root_imports_nothing_from_it(roots):
    """prepare and score run in data_root: a package there named like one the tools import is not imported."""
    for name in ("infer", "finetune", "yaml"):
        (roots.data / name).mkdir()
        (roots.data / name / "__init__.py").write_text('raise SystemExit("error: imported from data_root")')
    said = list(launch.run_tool(commands.score_args({}), roots.data, poll=0.05))[-1]
    assert said == ("refused", "error[usage]: run= is required: python -m infer.score run=runs/<name>"), said


def test_error_line_is_the_tools_own():
    assert launch.error_line("loading\r50%\rwarning: x\nerror[missing]: data.path=/x: not found\n") == \
        "error[missing]: data.path=/x: not found"
    assert launch.progress_line("prepare:  10%\rprepare:  60%") == "prepare:  60%"


def test_app_arguments():
    assert parse([])["host"] == "127.0.0.1" and parse([])["share"] == "false"
    assert parse(["runs=r", "data_root=d", "port=8000"])["port"] == "8000"
    for bad in (["prot=8000"], ["port=x"], ["share=yes"], ["runs"], ["runs="]):
        with pytest.raises(UserError):
            parse(bad)


def test_app_refuses_bad_arguments_in_one_line():
    r = subprocess.run([sys.executable, "-m", "finetune.app", "prot=1"], capture_output=True, text=True,
                       env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error[usage]: prot: unknown key; the app takes runs, data_root, " \
        "host, port, share"


def review_listing(folder: Path) -> list[dict]:
    """Four clips as finetune.review.review_clips lists them, the last one dropped."""
    return [{"audio": str(folder / "clips" / f"c{i}.wav"), "source": str(folder / "talk.wav"), "start": 2.0 * i,
             "end": 2.0 * i + 1.5, "seconds": 1.5, "text": None if i == 3 else f"heard {i}", "asr_text": f"heard {i}",
             "text_by": None if i == 3 else "asr", "dropped": i == 3, "in_dataset": i != 3, "problem": None}
            for i in range(4)]


def test_review_saves_only_what_the_person_changed(tmp_path):
    from finetune.app import transcripts

    listing = review_listing(tmp_path)
    audio = [c["audio"] for c in listing]
    rows = transcripts.table(listing, tmp_path)
    assert [r[0] for r in rows] == ["c0.wav", "c1.wav", "c2.wav", "c3.wav"] and "<audio" in rows[0][1]
    assert [r[2] for r in rows] == [False, False, False, True] and rows[3][3] == "heard 3"  # dropped: its asr text
    assert transcripts.table(listing, tmp_path / "clips" / "elsewhere")[0][1] == "(outside data_root)"
    assert transcripts.decisions(listing, rows) == ({}, set())  # the table as listed: nothing to save

    rows[0][3] = "  heard   0 "  # only spacing differs: saved the same, so unchanged
    rows[1][3] = "A person wrote this."
    rows[2][2] = "true"
    rows[3][2] = False  # restored, with the recogniser's text
    rows.append(["", "", False, "added on the page", "", "", None, "", ""])  # names no clip: ignored
    assert transcripts.decisions(listing, rows) == ({audio[1]: "A person wrote this.", audio[3]: "heard 3"},
                                                    {audio[2]})
    rows[3][3] = "Restored, in other words."
    assert transcripts.decisions(listing, rows)[0][audio[3]] == "Restored, in other words."
    rows[1][3] = "  "
    with pytest.raises(UserError, match="c1.wav: its text is empty"):
        transcripts.decisions(listing, rows)
    with pytest.raises(UserError, match="row 1: 'elsewhere.wav' is not a clip"):
        transcripts.decisions(listing, [["elsewhere.wav", "", False, "x"]])


def test_score_table_marks_the_best_row_and_says_how_to_score(runs, tmp_path):
    import shutil

    from finetune.app import scores
    from finetune.media.scores import FORMAT, write_scores

    run = shutil.copytree(runs["f5"], tmp_path / "f5")
    text, rows, choices, _ = scores.score_table(run)
    assert "cannot be scored" in text and "data.val_clips=N" in text and rows == choices == []

    def row(update, weights, loss, wer):
        return {"update": update, "weights": weights, "val_loss": loss, "wer": wer, "cer": wer and wer / 2,
                "speaker_similarity": None, "setup": "s1", "scored": "2025-01-01T00:00:00+00:00"}

    data = {"format": FORMAT, "run": "f5", "manifest_sha256": read_manifest(run)["sha256"],
            "held_out": {"rows": ["a:1", "a:2"], "audio_sha256": ["x", "y"]},
            "setups": {"s1": {"asr": {"model": "tiny-whisper"}, "speaker": None,
                              "synthesis": {"seed": 0, "nfe_step": 2, "vocoder": "griffinlim"}}},
            "rows": [row(2, "ema", 1.0, 0.5), row(2, "online", 1.1, 0.4), row(4, "ema", 0.9, 0.6),
                     row(6, "ema", 0.8, None)]}
    write_scores(run, data)
    text, rows, choices, (a, b) = scores.score_table(run)
    assert [r[:7] for r in rows] == [["", 2, "ema", "1.0000", "0.500", "0.250", ""],
                                     ["★", 2, "online", "1.1000", "0.400", "0.200", ""],
                                     ["", 4, "ema", "0.9000", "0.600", "0.300", ""],
                                     ["", 6, "ema", "0.8000", "", "", ""]]
    assert "best: update 2, online weights, by the lowest WER" in text and "recogniser tiny-whisper" in text
    assert "checkpoints no longer in the run: 6" in text
    assert choices[1] == ("update 2, online (best)", "2 online") and choices[3][0].endswith("(checkpoint gone)")
    assert (a, b) == ("2 online", "2 ema")  # the best, then the other weight set of its checkpoint
    assert scores.parse_key(b) == ("2", "ema")
    with pytest.raises(UserError):
        scores.parse_key(None)
    write_scores(run, data | {"manifest_sha256": "0" * 64})
    with pytest.raises(UserError, match="scores of another run"):
        scores.score_table(run)
