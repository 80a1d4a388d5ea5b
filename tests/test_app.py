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


def test_key_value_lines_are_checked_against_the_schema(roots, tmp_path):
    from finetune.app.page_new import fields_of_page
    from finetune.app.settings import read_lines

    owned = fields_of_page()
    pairs = read_lines("train.val_every=1\n\n# a comment\noptim=demo\nadapter.targets=[to_q, to_k]", "new", owned)
    assert pairs == [("train.val_every", 1), ("optim", "demo"), ("adapter.targets", ["to_q", "to_k"])]
    assert commands.extra_args(pairs, roots.confine) == ["train.val_every=1", "optim=demo", "adapter.targets=[to_q, to_k]"]
    for line, said in (("run.root=/tmp", "Run|runs="), ("run.name=x", "Run name"), ("hydra.run.dir=/tmp", "not a key"),
                       ("data.path=/etc", "Dataset"), ("pretrained=/etc/passwd", "Start from"), ("-m", "key=value"),
                       ("train.=1", "not a key"), ("train=nope", "no option"), ("train.val_every=0", "must be above 0"),
                       ("optim.weight_decay=-1", "at least 0"), ("logger.kind=x", "one of none"),
                       ("optim.lr=1", "set by the field 'optim.lr'")):
        with pytest.raises(UserError, match=said):
            read_lines(line, "new", owned)
    with pytest.raises(UserError, match="outside"):
        commands.extra_args(read_lines(f"vocoder.path={tmp_path / 'elsewhere'}", "new", owned), roots.confine)
    (roots.data / "vocos").mkdir()
    assert commands.extra_args(read_lines("vocoder.path=vocos", "new", owned), roots.confine) == \
        [f"vocoder.path={roots.data / 'vocos'}"]
    # a resume amends training and runtime keys only: the two an out-of-memory run needs, not the optimizer kind
    assert read_lines("data.frames_per_batch=1000\nmodel.arch.checkpoint_activations=true", "resume") == \
        [("data.frames_per_batch", 1000), ("model.arch.checkpoint_activations", True)]
    for line in ("vocab.extend=true", "optim.name=adamw8bit", "data.val_clips=2", "adapter.rank=4"):
        with pytest.raises(UserError, match="not a key a resume takes"):
            read_lines(line, "resume")


def test_each_form_offers_what_the_schema_lets_its_command_set():
    """The schema walked key by key: New fine-tune sets every key of python -m finetune (a field of its own or a
    key=value line), Resume exactly those a resume may amend (training and runtime), Data every key of
    python -m finetune.prepare; the fields' choices are the schema's; the command line takes all of it."""
    from dataclasses import fields as dc_fields

    from finetune.app import page_data, page_new, page_run
    from finetune.app.settings import groups, leaves, read_lines, settable
    from finetune.lock.schema import RUNTIME, TRAINING, FinetuneConfig
    from finetune.prepare_schema import PrepareConfig

    every = leaves(FinetuneConfig)
    assert {s.key for s in every} == set(settable("new"))
    assert {s.key for s in every if s.kind in (TRAINING, RUNTIME)} == set(settable("resume"))
    assert {"data.frames_per_batch", "model.arch.checkpoint_activations", "optim.lr"} <= set(settable("resume"))
    assert "optim.name" not in settable("resume") and "data.val_clips" in settable("new")
    owned = page_new.fields_of_page()
    composed = flatten(finetune_config(["model=f5tts_tiny", "data=demo"]))
    lines = []
    for s in every:
        if s.key in page_new.widget_keys():
            assert s.key in owned
            continue
        if s.key in page_new.OWNED:
            continue
        value = composed[s.key]
        lines.append(f"{s.key}={commands.hydra_value(value)}")
        assert read_lines(lines[-1], "new", owned), s.key  # taken as a key=value line
    for group in groups("new"):  # every config group: a field of its own, or group=option
        assert group in page_new.OWNED or read_lines(f"{group}={commands.options(group)[0]}", "new", owned)
    # python -m finetune composes every line the form would pass (one compose for all of them)
    again = flatten(finetune_config(["model=f5tts_tiny", "data=demo", *lines]))
    assert all(again[line.split("=")[0]] == composed[line.split("=")[0]] for line in lines)
    for key in page_new.widget_keys():  # a field's choices are the schema's (enums, true/false)
        assert key in settable("new")
    for key in page_run.RESUME_WIDGETS:
        assert key in settable("resume")
    for s in settable("resume").values():  # the rest of a resume's keys go as lines
        assert s.key in page_run.RESUME_WIDGETS or read_lines(f"{s.key}={commands.hydra_value(composed[s.key])}",
                                                              "resume", {k: k for k in page_run.RESUME_WIDGETS})
    prepare_keys = {s.key for s in leaves(PrepareConfig, kinds=False) if not s.key.startswith("model.")}
    assert prepare_keys == set(settable("prepare")) and {f.name for f in dc_fields(PrepareConfig)} - {"model"} <= \
        {k.split(".")[0] for k in prepare_keys}
    for key in prepare_keys - set(page_data.OWNED):
        value = settable("prepare")[key].default
        assert read_lines(f"{key}={commands.hydra_value(value)}", "prepare", page_data.OWNED), key


def test_every_text_key_is_confined_or_plain_text():
    """A text key of the schema that holds a path must be confined to the roots: a new one fails here until it is
    classified (commands.PATH_KEYS, or a field of the page that confines it, or plain text)."""
    from finetune.app import page_new
    from finetune.app.settings import settable

    texts = {k for k, s in settable("new").items() if s.type is str}
    plain = {"model.name", "model.upstream", "model.arch.qk_norm", "model.arch.skip_connect_type",
             "model.arch.attn_backend", "model.mel.mel_spec_type", "data.name", "logger.project"}
    assert texts == plain | set(commands.PATH_KEYS) | (texts & set(page_new.OWNED))


def test_a_setting_says_what_it_takes_and_refuses_the_rest():
    from finetune.app.settings import UNSET, settable

    keys = settable("new")
    assert keys["optim.lr"].describe() == "number > 0"
    assert keys["data.frames_per_batch"].describe() == "whole number > 0, or auto"
    assert keys["train.keep_last_n"].describe() == "whole number >= -1, not 0"
    assert keys["optim.name"].choices == ("adamw", "adamw8bit") and keys["train.log_samples"].choices == ("true", "false")
    assert keys["optim.lr"].check("  ") is UNSET and keys["optim.lr"].check("1e-4") == 1e-4
    assert keys["train.max_updates"].check("null") is None and keys["data.frames_per_batch"].check("auto") == "auto"
    for key, text, said in (("optim.lr", "-1", "optim.lr=-1: must be above 0"), ("optim.lr", "nan", "finite"),
                            ("train.seed", "abc", "whole number"), ("train.seed", "1.5", "whole number"),
                            ("optim.name", "sgd", "must be one of adamw, adamw8bit"),
                            ("data.frames_per_batch", "0", "or auto"), ("run.name", "", None)):
        if said is None:
            assert keys[key].check(text) is UNSET
            continue
        with pytest.raises(UserError, match=said):
            keys[key].check(text)


def test_new_run_like_this_one_composes_its_config_again(runs, tmp_path):
    """The New fine-tune form filled from a run gives back the command of that run's config (but its name)."""
    from finetune.app import page_new
    from finetune.app.widgets import Ctx
    from finetune.runfolder import manifest_and_config

    roots = Roots.make(tmp_path / "runs", tmp_path / "data", tmp_path / "up")
    for run_dir in runs.values():
        config = manifest_and_config(run_dir)[1]
        form = dict(zip(page_new.NAMES + page_new.widget_keys(), page_new.fill(Ctx(roots), config)))
        assert form["name"] == "" and form["preset"] == "demo"  # a new name
        form["name"] = "again"
        argv, _ = page_new.form_args(Ctx(roots), form)
        again = flatten(finetune_config(argv[4:]))
        assert {k: v for k, v in again.items() if not k.startswith("run.")} == \
            {k: v for k, v in flatten(config).items() if not k.startswith("run.")}


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


def test_diff_lists_differing_keys_first(tmp_path, monkeypatch):
    rows = runs.diff({"a": 1, "m": {"x": 1, "y": 2}}, {"a": 1, "m": {"x": 5, "y": 2}, "z": None})
    assert [r[0] for r in rows] == ["m.x", "z", "a", "m.y"]
    assert rows[1][1:] == ["(absent)", "null", False]
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)  # one folder named relative and absolute is the same folder
    assert runs.diff({"run": {"root": "data"}}, {"run": {"root": str(tmp_path / "data")}})[0][3] is True
    assert runs.diff({"run": {"root": "elsewhere"}}, {"run": {"root": str(tmp_path / "data")}})[0][3] is False


def test_diff_shows_what_a_run_trains_with_after_a_resume(runs, tmp_path):
    """An amended run diffs with its amendments applied: the updates it was resumed to, not those it started with."""
    import shutil

    from finetune.app.page_compare import diff_rows
    from finetune.app.widgets import Ctx
    from finetune.runfolder import append_amendment

    roots = Roots.make(tmp_path / "runs", tmp_path / "data", tmp_path / "up")
    for name in ("a", "b"):
        shutil.copytree(runs["f5"], tmp_path / "runs" / name, ignore=shutil.ignore_patterns(".lock"))
    append_amendment(tmp_path / "runs" / "b", read_manifest(tmp_path / "runs" / "b"), {"train.max_updates": [4, 150]})
    said, table = diff_rows(Ctx(roots), "a", "b", True)
    assert table.values.tolist() == [["config.train.max_updates", "4", "150"]] and list(table.columns) == ["key", "A", "B"]
    said, table = diff_rows(Ctx(roots), "a", "b", False)
    assert set(table["same"]) == {"same", "differs"}


def test_a_second_launch_of_a_name_is_refused_while_the_first_starts(roots):
    run_dir = roots.run_dir("twice", must_exist=False)
    argv = commands.finetune_args("f5tts_tiny", {"run.root": str(roots.runs), "run.name": "twice"})
    first = launch.launch_finetune(roots.runs, run_dir, argv)
    assert os.getsid(first.pid) == first.pid  # a session of its own: stopping the app does not stop it
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
    assert said[0] == "refused" and launch.REFUSAL.match(said[1]) and \
        said[1].endswith(": run= is required: python -m infer.score run=runs/<name>"), said


def test_error_line_is_the_tools_own():
    assert launch.error_line("loading\r50%\rwarning: x\nerror: data.path=/x: not found\n") == \
        "error: data.path=/x: not found"
    assert launch.error_line("warning: y\nerror[vocab]: data: 1 symbols ...\n") == "error[vocab]: data: 1 symbols ..."
    assert launch.error_code("error[vocab]: data: 1 symbols") == "vocab"
    assert launch.error_code("error: data: 1 symbols") is None and launch.error_code("warning: x") is None
    assert launch.progress_line("prepare:  10%\rprepare:  60%") == "prepare:  60%"


def test_a_refusal_names_the_field_of_the_page_for_its_key():
    from finetune.app.widgets import error

    fields = {"ref_text": "What the reference says", "vocab": "Vocab"}
    assert "→ on this page: What the reference says" in error("ref_text= is required with ref_audio=", fields)
    assert "→ on this page: Vocab" in error("error[vocab]: data: 2 symbols are not in the vocab", fields)
    assert "on this page" not in error("error[busy]: run x is running", fields)


def test_tools_report_progress_to_a_file_not_a_console(tmp_path, monkeypatch):
    from finetune.media import progress
    from finetune.workers import pmap

    monkeypatch.setenv(progress.ENV, str(tmp_path / "p.json"))
    assert pmap(abs, [-1, -2, -3], 1, "prepare", "clip") == [1, 2, 3]
    state = progress.read(tmp_path / "p.json")
    assert (state["desc"], state["n"], state["total"], state["unit"]) == ("prepare", 3, 3, "clip")
    assert progress.read(tmp_path / "none.json") is None


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


def test_the_frontend_fixes_apply_to_this_gradio_and_are_served_in_its_place():
    """finetune/app/frontend.py replaces exact text of Gradio's files: a Gradio whose files differ fails here (the app
    then serves Gradio's own files, and the fixes must be looked at again)."""
    import asyncio

    from finetune.app import frontend

    assert frontend.missing() == [], "these fixes do not apply to the installed Gradio: " + str(frontend.missing())
    fixed = frontend.patched()
    for prefix, replacements in frontend.FIXES.items():
        text = next(body for name, body in fixed.items() if name.startswith(prefix)).decode()
        assert all(old not in text or old in new for old, new in replacements)
        assert all(text.count(new) == 1 for _, new in replacements)

    async def gradio(scope, receive, send):  # what Gradio would answer: its own file, or anything else
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"gradio"})

    def get(path):
        sent = []

        async def send(message):
            sent.append(message)

        asyncio.run(frontend.ServeFixed(gradio)({"type": "http", "method": "GET", "path": path}, None, send))
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    for name, body in fixed.items():
        assert get(f"/assets/{name}") == (200, body) and get(f"/app/assets/{name}") == (200, body)
        assert get(f"/assets/{name}.map") == (404, b"gradio")
    assert get("/assets/index.js") == (404, b"gradio") and get("/") == (404, b"gradio")


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


def test_uploads_land_in_a_new_folder_under_data_root_and_never_outside(roots, tmp_path):
    import zipfile

    from finetune.app import uploads

    wav = roots.uploads / "a.wav"
    wav.write_bytes(b"RIFF....WAVE")
    (roots.uploads / "a.txt").write_text("Hello.")
    safe = roots.uploads / "clips.zip"
    with zipfile.ZipFile(safe, "w") as z:
        z.writestr("voice/wavs/b.wav", b"RIFF")
        z.writestr("voice/metadata.csv", "wavs/b.wav|Hi.")
        z.writestr("__MACOSX/._b.wav", b"x")
        z.writestr("voice/notes.exe", b"x")  # not for prepare: left out
    target, written = uploads.store(roots, [str(wav), str(roots.uploads / "a.txt"), str(safe)], "mine")
    assert target == roots.data / "mine"
    assert sorted(str(p.relative_to(target)) for p in written) == \
        ["a.txt", "a.wav", "voice/metadata.csv", "voice/wavs/b.wav"]
    with pytest.raises(UserError, match="exists already"):
        uploads.store(roots, [str(wav)], "mine")
    for member in ("../evil.wav", "/abs.wav", "a/../../evil.wav"):
        bad = roots.uploads / "bad.zip"
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr(member, b"RIFF")
        with pytest.raises(UserError, match="outside its folder"):
            uploads.store(roots, [str(bad)], "bad")
        assert not (roots.data / "bad").exists() and not (roots.data / "evil.wav").exists()
    link = roots.uploads / "link.zip"
    with zipfile.ZipFile(link, "w") as z:
        info = zipfile.ZipInfo("l.wav")
        info.external_attr = 0o120777 << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(UserError, match="is a link"):
        uploads.store(roots, [str(link)], "links")
    with pytest.raises(UserError, match="outside"):  # a file that is not an upload
        uploads.store(roots, [str(tmp_path / "elsewhere")], "x")
    for name in ("../up", "a/b", "", ".."):
        with pytest.raises(UserError, match="one folder name"):
            uploads.store(roots, [str(wav)], name)
    with pytest.raises(UserError, match="no audio"):
        uploads.store(roots, [str(roots.uploads / "a.txt")], "texts")


def test_a_blind_choice_is_recorded_in_each_run_as_the_side_it_was(tmp_path):
    from finetune.app import listening

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    side_a = {"run": "a", "update": 2, "weights": "ema", "wav": "x.wav"}
    side_b = {"run": "b", "update": 4, "weights": "online", "wav": "y.wav"}
    entry = listening.record([a, b], side_a, side_b, True, "first", {"seed": 3})
    assert entry["choice"] == "b" and entry["played_first"] == "b"  # B played first, and the first was chosen
    listening.record([a, a], side_a, side_a, False, "same", {"seed": 3})
    lines = [json.loads(line) for line in (a / listening.FILE).read_text().splitlines()]
    assert [e["choice"] for e in lines] == ["b", "same"]  # one line per choice, even for one run on both sides
    assert json.loads((b / listening.FILE).read_text())["b"] == side_b


def test_remove_silence_cuts_long_pauses_and_keeps_the_settings(tmp_path):
    import numpy as np
    import soundfile as sf
    import torch

    from finetune.app import voice
    from finetune.media.audio import wav_settings, write_wav
    from finetune.media.sampling import record

    sr = 24000
    tone = 0.3 * np.sin(np.arange(sr) * 2 * np.pi * 220 / sr).astype(np.float32)
    wav = np.concatenate([tone, np.zeros(3 * sr, np.float32), tone])  # 1 s, 3 s of silence, 1 s
    keys = ("run", "checkpoint", "update", "manifest_sha256", "weights", "device", "nfe_step", "cfg_strength",
            "sway_sampling_coef", "use_epss", "speed", "vocoder", "vocoder_path", "vocoder_n_iter", "ref_audio",
            "ref_text", "gen_text")
    write_wav(tmp_path / "x.wav", torch.from_numpy(wav), sr, record("inference", seed=5, **dict.fromkeys(keys)))
    out = voice.remove_silence(tmp_path / "x.wav")
    trimmed, _ = sf.read(out)
    assert abs(len(trimmed) / sr - (2 + voice.KEPT_PAUSE)) < 0.05
    settings = wav_settings(out)
    assert settings["seed"] == 5 and settings["remove_silence"]["from"] == "x.wav"
    for typed, ok in (("-1", None), ("", None), ("7", 7)):
        assert voice.seed(typed) == ok if ok is not None else 0 <= voice.seed(typed) < 2 ** 32
    with pytest.raises(UserError):
        voice.seed("-2")


def test_a_reference_without_text_is_transcribed_by_the_recogniser(tmp_path):
    """Synthesize's reference clip with no text: the recogniser named on the page writes it (a tiny random
    Whisper here, so the text is gibberish: the path is what is checked)."""
    import numpy as np
    import soundfile as sf

    from finetune.app import voice
    from bench.makers import speechlike, write_tiny_whisper

    whisper = write_tiny_whisper(tmp_path / "whisper")
    sf.write(tmp_path / "ref.wav", np.stack([speechlike(1.5, 22050, 3)] * 2, axis=1), 22050)  # stereo, 22 kHz
    text = voice.transcribe(tmp_path / "ref.wav", str(whisper))
    assert text.strip() and text == voice.transcribe(tmp_path / "ref.wav", str(whisper))
    with pytest.raises(UserError, match="asr.model"):
        voice.transcribe(tmp_path / "ref.wav", str(tmp_path / "missing"))


def test_system_tab_names_devices_versions_and_free_disk(roots):
    from finetune.app.page_system import report
    from finetune.app.widgets import Ctx

    rows = dict(report(Ctx(roots)))
    assert rows["torch"].split("+")[0] and rows["f5-tts"] == "1.1.22"
    assert "free of" in rows["disk under runs"] and str(roots.runs) in rows["disk under runs"]
    assert "free of" in rows["memory"] and ("devices" in rows or "cuda:0" in rows)
