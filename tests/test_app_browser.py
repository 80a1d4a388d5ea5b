"""The web app in a real browser (Chromium through Playwright): every page a user needs to prepare data,
fine-tune, watch, stop, resume, listen, compare and export, against tiny runs made here.

One app server and one browser serve the whole module. `-m browser` selects these tests."""
import io
import json
import os
import re
import shlex
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app_browser import (AppServer, audio_bytes, choose, choose_starting, click, click_then, edit_cell, env,
                         events_sent, fill, launch_browser, radio, screenshot_on_failure, tab, table_rows, text_of, wait_row,
                         wait_text)
from tests.conftest import cli, finetune, in_background
from finetune.app import frontend
from finetune.lock.files import holder
from finetune.lock.manifest import read_manifest
from bench.makers import speechlike, write_clips, write_metadata

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser"),
              pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"),
                                 reason="needs /usr/bin/chromium (sudo apt-get install chromium)")]

# user text that a shell would act on: it must reach the tools as one argument and do nothing else
HOSTILE = "tiny; rm -rf canary $(touch pwned)"
SNOWMAN = "☃"  # a symbol no model vocab has: the launch must offer vocab.extend / vocab.accept_unknown


class Site:
    def __init__(self, top, server):
        self.top, self.runs, self.data, self.cwd = top, top / "runs", top / "data", top / "cwd"
        self.server, self.browser, self.fresh = server, None, False

    def restart(self) -> None:
        """Stop the app and start it again (a new port): it holds no state, so nothing may be lost."""
        self.server.stop()
        self.server = AppServer(self.runs, self.data, self.cwd, env())
        self.server.wait()

    def end_runs(self) -> None:
        """Training processes outlive the app by design; a failed test must not leave one running."""
        for run_dir in self.runs.iterdir():
            who = holder(run_dir) if run_dir.is_dir() else None
            if who and who.startswith("pid "):
                os.kill(int(who.split()[1]), signal.SIGKILL)

    def untouched(self) -> None:
        """Nothing a shell would have done with HOSTILE happened."""
        assert (self.cwd / "canary").is_dir()
        assert not any(p.name == "pwned" for p in self.top.rglob("pwned"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    top = tmp_path_factory.mktemp("app")
    for sub in ("runs", "data", "cwd", "cwd/canary"):
        (top / sub).mkdir()
    site = Site(top, AppServer(top / "runs", top / "data", top / "cwd", env()))
    try:
        yield from _serve(site)
    finally:
        site.server.stop()  # the one running now: a test may have restarted it
        site.end_runs()


def _serve(site):
    from playwright.sync_api import sync_playwright

    top = site.top

    # a folder of short clips with same-named transcripts, one of them too short to keep
    rows = write_clips(top / "data" / "clips", 4, min_s=1.0, max_s=1.5)
    for i, (audio, text) in enumerate(rows):
        audio.with_suffix(".txt").write_text(text + (f" {SNOWMAN}" if i == 0 else ""), encoding="utf-8")
    short = top / "data" / "clips" / "wavs" / "short.wav"
    sf.write(short, np.zeros(2400, dtype=np.float32) + 0.1, 24000)
    short.with_suffix(".txt").write_text("Too short.", encoding="utf-8")
    (top / "data" / "outside").symlink_to("/etc")
    with ThreadPoolExecutor(1) as pool:  # while the app starts and two tiny runs train here
        prepared = pool.submit(cli, "finetune.prepare", f"input={top / 'data' / 'clips' / 'wavs'}",
                               f"out={top / 'data' / 'voice'}", "workers=1")
        finetune(top / "runs", "alpha", "f5tts_tiny", "train.log_every=1")
        finetune(top / "runs", "beta", "e2tts_tiny")
        # a run whose process was killed without a word: its status still says running, nobody holds its lock
        shutil.copytree(top / "runs" / "beta", top / "runs" / "killed", ignore=shutil.ignore_patterns(".lock"))
        status = json.loads((top / "runs" / "killed" / "status.json").read_text())
        (top / "runs" / "killed" / "status.json").write_text(json.dumps({**status, "state": "running"}))
        # in this thread: Hydra's state and torch's seed are the process's own
        transcribed_dataset(top)
        # a run holding two of the clips out of training, to be scored by the test of the score table
        write_metadata(top / "heldout.csv", rows)
        prepare_here(f"input={top / 'heldout.csv'}", f"out={top / 'heldout'}")
        finetune(top / "runs", "scored", "f5tts_tiny", "data=custom", f"data.path={top / 'heldout'}",
                 "data.frames_per_batch=900", "data.val_clips=2")
        finetune(top / "runs", "gamma", "f5tts_tiny")  # resumed by the test of the Run page's state per run
        # a recording on the user's machine, to upload: eight stretches of speech with pauses between them
        sr = 16000
        sf.write(top / "recording.wav", np.concatenate([np.concatenate([speechlike(1.6, sr, 20 + i),
                                                                        np.zeros(int(0.6 * sr), np.float32)])
                                                        for i in range(8)]), sr)
        assert prepared.result().returncode == 0, prepared.result().stderr[-2000:]
    site.server.wait()
    with sync_playwright() as pw:
        site.browser = launch_browser(pw)
        try:
            yield site
        finally:
            site.browser.close()


def prepare_here(*overrides: str) -> None:
    """python -m finetune.prepare's own code, in this process."""
    from finetune.config import compose_config, plain
    from finetune.prepare import prepare
    from finetune.prepare_schema import PrepareConfig

    prepare(plain(compose_config("prepare", [*overrides, "workers=1"]), PrepareConfig))


def transcribed_dataset(top) -> None:
    """A recording at 16 kHz with three stretches of speech in data/recordings, cut and transcribed by a tiny
    random Whisper (data/whisper) into data/talk (prepare with transcribe=true)."""
    from bench.makers import write_tiny_whisper

    sr, parts = 16000, [np.zeros(6400, np.float32)]
    for seconds, seed in ((2.0, 7), (2.5, 8), (2.2, 9)):
        parts += [speechlike(seconds, sr, seed), np.zeros(int(0.8 * sr), np.float32)]
    (top / "data" / "recordings").mkdir()
    sf.write(top / "data" / "recordings" / "talk.wav", np.concatenate(parts), sr)
    whisper = write_tiny_whisper(top / "data" / "whisper")
    prepare_here(f"input={top / 'data' / 'recordings'}", f"out={top / 'data' / 'talk'}", "transcribe=true",
                 f"asr.model={whisper}", "slice.min_seconds=1")


@pytest.fixture(scope="module")
def shared_page(site):
    page = site.browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    site.fresh = False
    yield page
    page.close()


@pytest.fixture
def page(site, shared_page):
    """One page for the module (a page load costs seconds); loaded again after a test that failed on it.
    Each test sets every field it relies on."""
    if not site.fresh:
        shared_page.goto(site.server.url)
        shared_page.wait_for_selector("#runs-table [data-testid=cell-0-0]")
        site.fresh = True
    return shared_page


def open_run(page, name: str) -> None:
    # opening the Runs tab refreshes its table, which may gain or reorder rows between finding the row and
    # clicking it: the run picker, set by the click at once, tells whether the row clicked was the run's
    picker = page.locator("#run-pick input")
    for attempt in range(3):
        tab(page, "runs")
        wait_row(page, "runs-table", name, 0, ".")
        row = next(i for i, r in enumerate(table_rows(page, "runs-table")) if r[0] == name)
        page.locator(f"#runs-table [data-testid=cell-{row}-0]").click()
        deadline = time.monotonic() + 5
        while picker.input_value() != name and time.monotonic() < deadline:
            time.sleep(0.1)
        if picker.input_value() == name:
            break
    wait_text(page, "run-state", "^" + re.escape(name) + ":", timeout=30)


def new_form(page, name: str, data: str = "demo (the two clips f5-tts ships)", extra: str = "",
             choices: dict | None = None, **settings) -> None:
    """Fill every field of the New fine-tune form (the page is shared: nothing may carry over from a test
    before): a tiny from-scratch model with the weights-free vocoder; `settings` by key (dots as _), `choices`
    for the dropdowns by elem_id (the rest: their first choice, the default)."""
    from finetune.app.page_new import WIDGETS
    from finetune.app.settings import settable

    tab(page, "new")
    choose(page, "new-model", "f5tts_tiny")
    choose(page, "new-data", data)
    radio(page, "new-pretrained", "none (from scratch)")
    fill(page, "new-name", name)
    choices = {"new-vocoder": "griffinlim", **(choices or {})}
    dropdowns = ["new-logger", "new-adapter", "new-vocab-choice", "new-vocoder"]
    for key in (k for row in WIDGETS for k in row):
        elem = "new-" + key.replace(".", "-").replace("_", "-")
        if settable("new")[key].choices:
            dropdowns.append(elem)
        else:
            fill(page, elem, settings.get(key.replace(".", "_"), ""))
    for elem in dropdowns:
        if elem in choices:
            choose(page, elem, choices[elem])
        else:
            choose_first(page, elem)
    fill(page, "new-extra", extra)


FIRST: dict[str, str] = {}  # each dropdown's first choice, as seen when it was last opened


def choose_first(page, elem_id: str) -> None:
    """A dropdown back to its first choice (a form's `default`)."""
    box = page.locator(f"#{elem_id} input[role=combobox]")
    if elem_id in FIRST and box.input_value() == FIRST[elem_id]:
        return
    box.click()
    first = page.locator("[role=option]").first
    FIRST[elem_id] = first.get_attribute("aria-label")
    first.click()
    box.blur()


def open_resume(page) -> None:
    """The Resume panel open (a click on its title toggles it, and the page is shared)."""
    if not page.locator("#resume-train-max-updates input").is_visible():
        page.locator("#resume-panel").get_by_text("Resume").first.click()
    page.locator("#resume-train-max-updates input").wait_for(state="visible")


def run_update(page) -> int:
    return int(page.locator("#run-update").inner_text())


# 1
@screenshot_on_failure
def test_runs_table_lists_a_tiny_run(site, page, tmp_path):
    row = wait_row(page, "runs-table", "alpha", 8, "^finished$")
    assert row[1] == "f5tts_tiny" and row[2] == "F5-TTS v1" and row[6] == "4 / 4", row
    wait_row(page, "runs-table", "beta", 8, "^finished$")  # (a refresh may be redrawing the table: wait for it)
    wait_row(page, "runs-table", "killed", 8, "^interrupted$")
    # only the tab shown refreshes on a timer (each event costs the browser more as the page fills)
    tab(page, "data")
    # quiet for a refresh period first: a tick due as the tab changed, or a slow reply turning the timers off
    assert events_sent(page, 2.5, settle=2.5) == []
    tab(page, "runs")
    assert len(events_sent(page, 2.5)) >= 1
    # the browser keeps no history of the events (Gradio's run history: each refresh's tables, the transcripts)
    assert not [k for k in page.evaluate("Object.keys(localStorage)") if k.startswith("gradio:run-history")]
    # the page runs Gradio's frontend with the app's fixes (finetune/app/frontend.py)
    loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    for name, fixed in frontend.patched().items():
        url = next((u for u in loaded if u.endswith("/assets/" + name)), None)
        assert url and page.request.get(url).body() == fixed, (name, loaded)


# 2
@screenshot_on_failure
def test_run_page_shows_verified_manifest_and_loss_curve(site, page, tmp_path):
    open_run(page, "alpha")
    wait_text(page, "run-verified", "manifest verified")
    logged = len((site.runs / "alpha" / "metrics.jsonl").read_text().splitlines())
    assert logged == 4
    wait_points(page, logged)
    wait_text(page, "run-command", "python -m finetune model=f5tts_tiny")
    checkpoints = table_rows(page, "run-checkpoints")
    assert [r[0] for r in checkpoints] == ["4", "2"] and all(r[1] == "bound" for r in checkpoints), checkpoints
    if os.environ.get("F5TUNE_APP_SCREENSHOT"):  # docs/app.png is made this way
        page.screenshot(path=os.environ["F5TUNE_APP_SCREENSHOT"], full_page=False)
    click(page, "run-like")  # the New fine-tune tab opens, filled with the run's settings
    wait_text(page, "new-command", r"python -m finetune model=f5tts_tiny .*train\.log_every=1")


def wait_points(page, logged: int) -> None:
    points = page.locator("#plot-loss g.mark-symbol path")  # one symbol per plotted point
    deadline = time.monotonic() + 20
    while points.count() != logged and time.monotonic() < deadline:
        time.sleep(0.2)
    assert points.count() == logged


# 3
@screenshot_on_failure
def test_diff_of_two_runs_lists_differing_model_keys(site, page, tmp_path):
    tab(page, "compare")
    choose(page, "cmp-a", "alpha")
    choose(page, "cmp-b", "beta")
    page.locator("#cmp-only input[type=checkbox]").check()
    click(page, "cmp-go")  # (ticking the box compares too)
    wait_text(page, "cmp-summary", r"\d+ keys differ")
    # the table draws its rows after the summary shows: wait for them
    assert wait_row(page, "cmp-diff", "model.backbone", 2, "^UNetT$")[1] == "DiT"
    rows = table_rows(page, "cmp-diff")
    shown = {r[0]: r for r in rows}
    assert shown["model.name"][1:3] == ["f5tts_tiny", "e2tts_tiny"]
    assert all(len(r) == 3 for r in rows), rows  # only differing keys, as asked: no column saying so


def expected_seconds(reference, ref_text: str, text: str) -> float:
    """infer's duration rule: the reference clip's frames per byte of its text, times the bytes spoken."""
    ref_frames = len(sf.read(reference)[0]) // 256
    return int(ref_frames / len(ref_text.encode()) * len(text.encode())) * 256 / 24000


def wav_of(data: bytes):
    wav, sr = sf.read(io.BytesIO(data))
    return wav, sr


# 4
@screenshot_on_failure
def test_synthesis_plays_a_24khz_wav_of_plausible_length(site, page, tmp_path):
    tab(page, "synth")
    choose(page, "syn-run", "alpha")
    text = f"Hello there, {HOSTILE}"
    fill(page, "syn-text", text)
    fill(page, "syn-nfe", 2)
    choose(page, "syn-vocoder", "griffinlim")
    click_then(page, "syn-go", "syn-msg", r"\A(wrote|error)")
    assert "wrote" in page.locator("#syn-msg").inner_text()
    wav, sr = wav_of(audio_bytes(page, "syn-out"))
    assert sr == 24000
    # the whole hostile text arrived as one argument, or the length would not match
    expected = expected_seconds(site.runs / "alpha" / "reference.wav",
                                "Some call me nature, others call me mother nature. ", text)
    assert abs(len(wav) / sr - expected) < 0.05, (len(wav) / sr, expected)
    site.untouched()


# 5 and 6, in one run (each start of a trainer costs seconds of imports)
@screenshot_on_failure
def test_launch_stop_resume_from_the_page(site, page, tmp_path):
    """A fine-tune launched from the form (through a vocab refusal) trains detached: a second launch of its
    name is refused, an app restart does not stop it, Stop leaves `stopped` with a checkpoint at the update
    reached, and Resume takes it to `finished`, in the runs table too."""
    new_form(page, HOSTILE, data="voice", train_log_every=1, train_max_updates=100000,
             train_save_every=100000, optim_lr=0.001, data_frames_per_batch=2000)
    wait_text(page, "new-data-summary", "4 clips")
    assert "too_short" in page.locator("#new-data-report textarea").input_value()
    # the name and the last field filled both show: an edit made while a compose is pending is not dropped
    command = wait_text(page, "new-command", rf"(?s)(?=.*{re.escape(HOSTILE)})(?=.*train\.log_every=1)")
    assert f'run.name="{HOSTILE}"' in shlex.split(command), command  # one argument, quoted for Hydra
    refusal = click_then(page, "new-launch", "new-result", r"\Aerror\[vocab\]:")
    assert SNOWMAN in refusal and "vocab.accept_unknown=true" in refusal, refusal
    assert not (site.runs / HOSTILE).exists()  # refused: nothing written
    click(page, "new-vocab-accept")
    state = re.escape(HOSTILE) + ": "
    wait_text(page, "run-state", state + "running", 120)
    deadline = time.monotonic() + 120
    while run_update(page) < 3:
        assert time.monotonic() < deadline, "the run never got past update 3"
        time.sleep(0.3)
    in_background(json.loads((site.runs / HOSTILE / "status.json").read_text())["pid"])
    tab(page, "new")  # the same run name again, while the first one trains: refused
    assert "already exists" in click_then(page, "new-launch", "new-result", r"\Aerror\[exists\]:")

    page.goto("about:blank")  # leaving the page and restarting the app leave the run training
    site.restart()
    page.goto(site.server.url)
    open_run(page, HOSTILE)
    wait_text(page, "run-state", state + "running")
    before = run_update(page)
    while run_update(page) <= before:
        assert time.monotonic() < deadline + 60, "the run stopped updating after the app restarted"
        time.sleep(0.3)

    click(page, "run-stop")
    wait_text(page, "run-state", state + "stopped", 60)
    status = json.loads((site.runs / HOSTILE / "status.json").read_text())
    reached = status["update"]
    assert status["state"] == "stopped" and reached >= 3
    wait_points(page, reached)  # the curves wait while the run trains, not once it stopped
    wait_row(page, "run-checkpoints", str(reached), 1, "bound", 20)  # a checkpoint at the update reached
    open_resume(page)
    fill(page, "resume-train-max-updates", reached + 3)
    click(page, "resume-button")
    wait_text(page, "run-state", state + "finished", 120)
    assert json.loads((site.runs / HOSTILE / "status.json").read_text())["update"] == reached + 3
    assert "train.max_updates" in page.locator("#run-amendments textarea").input_value()
    tab(page, "runs")
    wait_row(page, "runs-table", HOSTILE, 8, "^finished$")
    assert wait_row(page, "runs-table", HOSTILE, 6, ".")[6] == f"{reached + 3} / {reached + 3}"
    config = read_manifest(site.runs / HOSTILE)["config"]  # what the trainer received, as one value
    assert config["run"]["name"] == HOSTILE and config["vocab"]["accept_unknown"] is True
    site.untouched()


# 7
@screenshot_on_failure
def test_ab_comparison_shows_two_audio_players(site, page, tmp_path):
    tab(page, "compare")
    choose(page, "ab-a-run", "alpha")
    choose(page, "ab-a-ckpt", "2")
    choose(page, "ab-b-run", "alpha")
    choose(page, "ab-b-ckpt", "4")
    fill(page, "ab-text", "Two checkpoints, one sentence.")
    clip = sorted((site.data / "clips" / "wavs").glob("clip_*.wav"))[1]  # an uploaded reference, with its text
    page.locator("#ab-ref input[type=file]").set_input_files(str(clip))
    page.locator("#ab-ref audio").first.wait_for(state="attached")
    fill(page, "ab-ref-text", clip.with_suffix(".txt").read_text(encoding="utf-8"))
    fill(page, "ab-nfe", 2)
    choose(page, "ab-vocoder", "griffinlim")
    page.locator("#ab-blind input").uncheck()  # names shown at once (the blind test is below)
    text = click_then(page, "ab-go", "ab-msg", r"\A(A: |error)")
    assert text.startswith("A: "), text
    a, b = audio_bytes(page, "ab-out-a"), audio_bytes(page, "ab-out-b")
    (wa, sra), (wb, srb) = wav_of(a), wav_of(b)
    assert sra == srb == 24000 and len(wa) == len(wb)  # same text, reference and seed: same length
    ref_text = clip.with_suffix(".txt").read_text(encoding="utf-8") + " "
    assert abs(len(wa) / sra - expected_seconds(clip, ref_text, "Two checkpoints, one sentence.")) < 0.05
    assert not np.array_equal(wa, wb)  # two checkpoints (update 2 EMA, update 4 online): two voices


# 8
@screenshot_on_failure
def test_paths_outside_the_roots_are_refused(site, page, tmp_path):
    tab(page, "data")
    fill(page, "prep-out", "anything")
    for typed in ("../../etc", "/etc", "outside"):  # up and out, absolute, a symlink under data_root to /etc
        choose(page, "prep-input", typed)
        # the command shown says so first; it grows a line, and a click made before it does would miss the button
        wait_text(page, "prep-command", f"# error: input={re.escape(typed)}: refused")
        text = click_then(page, "prep-go", "prep-result", f"error\\[path\\]: input={re.escape(typed)}: refused")
        assert "outside" in text
    new_form(page, "anything")
    radio(page, "new-pretrained", "local file")
    fill(page, "new-pretrained-file", "/etc/passwd")
    wait_text(page, "new-command", "# error: pretrained=/etc/passwd: refused")
    click_then(page, "new-launch", "new-result", "error\\[path\\]: pretrained=/etc/passwd: refused")
    assert not (site.data / "anything").exists()


@screenshot_on_failure
def test_prepare_a_folder_of_clips_then_browse_it(site, page, tmp_path):
    tab(page, "data")
    choose(page, "prep-input", "clips/wavs")
    fill(page, "prep-out", "voice2")
    click_then(page, "prep-go", "prep-result", r"\A(dataset:|error)")
    assert "4 clips" in page.locator("#prep-result").inner_text()
    assert "short.wav: too_short" in page.locator("#prep-report textarea").input_value()
    wait_text(page, "browse-summary", "4 clips")
    rows = table_rows(page, "browse-clips")
    assert len(rows) == 4
    page.locator("#browse-clips [data-testid=cell-1-1]").click()
    wait_text(page, "browse-text", re.escape(rows[1][1][:20]))
    wav, sr = wav_of(audio_bytes(page, "browse-audio"))
    assert sr == 24000 and len(wav) > 24000


@screenshot_on_failure
def test_transcribe_recordings_from_the_data_form(site, page, tmp_path):
    """Recordings without transcripts, cut with the form's slice lengths and transcribed by the Whisper named by
    its folder under data_root, become a dataset whose text came from the recogniser."""
    tab(page, "data")
    choose(page, "prep-input", "recordings")
    fill(page, "prep-out", "talk2")
    page.locator("#prep-transcribe input").check()
    fill(page, "prep-asr", "whisper")
    fill(page, "prep-slice-min", 1)
    # the last field filled shows too: the command follows every edit, however fast they came
    whisper = re.escape(f"asr.model={site.data / 'whisper'}")
    command = wait_text(page, "prep-command", rf"(?s)(?=.*{whisper})(?=.*slice\.min_seconds=1\b)")
    assert "transcribe=true" in command, command
    result = click_then(page, "prep-go", "prep-result", r"\A(dataset:|error)", 180)
    assert "3 clips" in result, result
    clips = json.loads((site.data / "talk2" / "dataset.json").read_text())["clips"]
    assert len(clips) == 3 and {c["text_by"] for c in clips} == {"asr"}
    page.locator("#prep-transcribe input").uncheck()  # the page is shared: the next test prepares clips


@screenshot_on_failure
def test_export_offers_the_file(site, page, tmp_path):
    tab(page, "export")
    choose(page, "exp-run", "alpha")
    choose(page, "exp-ckpt", "4")
    radio(page, "exp-weights", "online")
    click_then(page, "exp-go", "exp-msg", r"\A(wrote|exported before|error)")
    link = page.locator("#exp-files a").first
    assert link.inner_text() == "alpha-00000004-online.safetensors"
    data = page.request.get(site.server.url.rstrip("/") + link.get_attribute("href")).body()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    assert header["__metadata__"]["format"] == "f5tune-export/1" and header["__metadata__"]["weights"] == "online"
    assert (site.runs / "alpha" / "exports" / "alpha-00000004-online.safetensors").stat().st_size == len(data)


@screenshot_on_failure
def test_review_edits_a_transcript_and_drops_a_clip(site, page, tmp_path):
    """A dataset transcribed from recordings: one text corrected and one clip dropped on the page, saved, and
    the dataset prepared again with one clip less and the person's text."""
    dataset = site.data / "talk" / "dataset.json"
    before = json.loads(dataset.read_text(encoding="utf-8"))
    assert len(before["clips"]) == 3 and {c["text_by"] for c in before["clips"]} == {"asr"}
    tab(page, "data")
    choose(page, "rev-data", "talk")
    wait_text(page, "rev-summary", "3 clips")
    rows = table_rows(page, "rev-clips")
    assert [r[0] for r in rows] == [Path(c["audio"]).name for c in before["clips"]], rows
    assert page.locator("#rev-clips [data-testid^=cell-] audio").count() == 3  # a player per clip
    edit_cell(page, "rev-clips", 0, 3, "A person heard this.")
    page.locator("#rev-clips [data-testid=cell-1-2] input[type=checkbox]").check()
    text = click_then(page, "rev-save", "rev-result", r"\A(dataset|error|nothing)")
    assert text.startswith("dataset: ") and "2 clips" in text and "1 text(s) saved, 1 clip(s) dropped" in text, text
    after = json.loads(dataset.read_text(encoding="utf-8"))
    assert after["summary"]["sha256"] != before["summary"]["sha256"]
    assert [c["audio"] for c in after["clips"]] == [before["clips"][0]["audio"], before["clips"][2]["audio"]]
    assert after["clips"][0]["text"] == "A person heard this." and after["clips"][0]["text_by"] == "person"
    assert after["clips"][1]["text_by"] == "asr"
    wait_row(page, "rev-clips", rows[1][0], 5, "^dropped$", 20)  # the table as saved


@screenshot_on_failure
def test_score_table_marks_the_best_and_plays_two_rows(site, page, tmp_path):
    """A run with held-out clips: the page says how to score it; a recogniser outside the roots is refused;
    scored from the page (validation loss only), its rows show with the best marked, and two rows go through
    the A/B path into two players."""
    from finetune.media.scores import best_row, read_scores

    run = site.runs / "scored"
    tab(page, "compare")
    choose(page, "sc-run", "scored")
    wait_text(page, "sc-msg", re.escape(f"python -m infer.score run={run}"))
    fill(page, "sc-asr", "/etc")
    assert "outside" in click_then(page, "sc-score", "sc-msg", r"\Aerror\[path\]:")
    fill(page, "sc-asr", "")
    click_then(page, "sc-score", "sc-msg", "4 scored rows", 180)
    scores = read_scores(run)
    rows = table_rows(page, "sc-table")
    assert [(r[1], r[2]) for r in rows] == [("2", "ema"), ("2", "online"), ("4", "ema"), ("4", "online")], rows
    best, _ = best_row(scores["rows"])
    assert [(r[1], r[2]) for r in rows if r[0] == "★"] == [(str(best["update"]), best["weights"])], rows
    assert all(float(r[3]) > 0 and r[4] == "" for r in rows)  # a loss, no WER without a recogniser
    choose_starting(page, "sc-a", "update 2, ema")
    choose_starting(page, "sc-b", "update 4, online")
    fill(page, "ab-text", "Two rows, one sentence.")
    fill(page, "ab-seed", 0)
    fill(page, "ab-nfe", 2)
    choose(page, "ab-vocoder", "griffinlim")
    page.locator("#ab-blind input").uncheck()
    text = click_then(page, "sc-ab", "ab-msg", r"\A(A: |error)")
    assert "model_00000002-ema-" in text and "model_00000004-online-" in text, text
    (wa, sra), (wb, srb) = wav_of(audio_bytes(page, "ab-out-a")), wav_of(audio_bytes(page, "ab-out-b"))
    assert sra == srb == 24000 and len(wa) == len(wb) and not np.array_equal(wa, wb)
    assert page.locator("#ab-a-ckpt input").input_value() == "2"  # the pickers show what was played
    assert page.locator("#ab-b-ckpt input").input_value() == "4"


# ---- the issue of the forms made from the schema, each run's own state, progress and listening ----------------

@screenshot_on_failure
def test_launch_with_held_out_clips_and_lora_from_the_page(site, page, tmp_path):
    """data.val_clips and adapter=lora set on the form reach the run (before, neither could be set), and a value
    out of range shows at its field before anything runs."""
    new_form(page, "lora-held", data="voice", choices={"new-adapter": "lora", "new-vocab-choice":
                                                       "map them to the unknown token 0 (vocab.accept_unknown=true)"},
             data_val_clips=1, train_max_updates=2, train_save_every=2, optim_lr=-1, data_frames_per_batch=2000,
             adapter_rank=4)
    radio(page, "new-pretrained", "another run")
    choose(page, "new-pretrained-run", "alpha")
    wait_text(page, "new-optim-lr", "optim.lr=-1: must be above 0")  # at the field, as typed
    assert "invalid" in page.locator("#new-optim-lr").get_attribute("class")
    assert not (site.runs / "lora-held").exists()
    fill(page, "new-optim-lr", 0.001)
    wait_text(page, "new-optim-lr", "number > 0")
    command = wait_text(page, "new-command", r"(?s)(?=.*data\.val_clips=1)(?=.*adapter=lora)(?=.*optim\.lr=0\.001)")
    assert "adapter.rank=4" in command and f"pretrained={site.runs / 'alpha'}" in command, command
    click(page, "new-launch")
    wait_text(page, "run-state", "^lora-held: ", 180)  # opens the run's page
    wait_text(page, "run-state", "^lora-held: finished", 180)
    m = read_manifest(site.runs / "lora-held")
    assert m["config"]["data"]["val_clips"] == 1 and len(m["data"]["val"]["rows"]) == 1
    assert m["config"]["adapter"]["kind"] == "lora" and m["config"]["adapter"]["rank"] == 4
    assert page.locator("#run-stop").is_disabled()  # finished: nothing to stop


@screenshot_on_failure
def test_the_run_page_belongs_to_the_run_shown(site, page, tmp_path):
    """Resume fields filled for one run are emptied when another is picked (they never reach it); a resume the
    trainer refuses shows as refused, in its own words; a resume with data.frames_per_batch (what an out of
    memory run needs) is amended into that run alone."""
    open_run(page, "gamma")
    open_resume(page)
    fill(page, "resume-train-max-updates", 8)
    fill(page, "resume-data-frames-per-batch", 1500)
    open_run(page, "beta")
    assert page.locator("#resume-train-max-updates input").input_value() == ""
    assert page.locator("#resume-data-frames-per-batch input").input_value() == ""
    box, deadline = page.locator("#resume-train-max-updates input"), time.monotonic() + 30
    while box.get_attribute("placeholder") != "keep: 4":  # what an empty field keeps: the run's value
        assert time.monotonic() < deadline, box.get_attribute("placeholder")
        time.sleep(0.2)
    refusal = click_then(page, "resume-button", "run-message", r"\A(error|resumed)", 120)
    assert re.match(r"error(\[\w+\])?: ", refusal) and "train.max_updates" in refusal, refusal  # not "resumed"
    assert not (site.runs / "beta" / "amendments.jsonl").exists()
    assert not (site.runs / "gamma" / "amendments.jsonl").exists()
    open_run(page, "gamma")
    assert text_of(page, "run-message") == ""  # beta's refusal stays with beta
    fill(page, "resume-train-max-updates", 6)
    fill(page, "resume-data-frames-per-batch", 1500)
    click_then(page, "resume-button", "run-message", r"\A(error|resumed)", 120)
    assert text_of(page, "run-message").startswith("resumed"), text_of(page, "run-message")
    wait_text(page, "run-state", "^gamma: finished · update 6 of 6", 120)
    entries = [json.loads(line) for line in (site.runs / "gamma" / "amendments.jsonl").read_text().splitlines()]
    assert entries[-1]["changes"]["data.frames_per_batch"][1] == 1500, entries
    assert not (site.runs / "beta" / "amendments.jsonl").exists()
    assert page.locator("#run-progress").get_attribute("max") == "6"


@screenshot_on_failure
def test_upload_a_recording_and_prepare_it_with_a_progress_bar(site, page, tmp_path):
    """A recording uploaded from the browser lands in a new folder under data_root; prepared with transcription,
    a progress bar moves through the stages; the dataset then shows for review."""
    tab(page, "data")
    page.locator("#up-files input[type=file]").set_input_files(str(site.top / "recording.wav"))
    # the file list names the file in an aria-label (its text is split into stem and extension)
    page.locator("#up-files").get_by_label("recording.wav").first.wait_for()
    fill(page, "up-folder", "uploaded")
    said = click_then(page, "up-go", "up-msg", r"\A(uploaded|error)")
    assert said.startswith("uploaded") and (site.data / "uploaded" / "recording.wav").is_file(), said
    assert page.locator("#prep-input input").input_value() == "uploaded"
    fill(page, "prep-out", "uploaded-ds")
    page.locator("#prep-transcribe input").check()
    fill(page, "prep-asr", "whisper")
    fill(page, "prep-slice-min", 1)
    fill(page, "prep-slice-max", 0.5)  # out of range: said before anything runs
    wait_text(page, "prep-check", r"slice\.max_seconds=0\.5: must be more than slice\.min_seconds=1")
    fill(page, "prep-slice-max", 3)
    fill(page, "prep-extra", "asr.batch_size=1")  # a key without a field of its own; progress in small steps
    wait_text(page, "prep-command", r"asr\.batch_size=1")
    assert text_of(page, "prep-check") == ""
    click(page, "prep-go")
    seen, deadline = [], time.monotonic() + 240
    while not re.match(r"(dataset:|error)", text_of(page, "prep-result")):
        assert time.monotonic() < deadline, seen
        bar = page.evaluate("() => { const e = document.querySelector('#prep-result progress[max]');"
                            " return e ? [e.value, e.max] : null }")
        if bar and bar not in seen:
            seen.append(bar)
        time.sleep(0.1)
    result = text_of(page, "prep-result")
    assert result.startswith("dataset:") and "8 clips" in result, result
    assert len(seen) >= 2 and any(v < m for v, m in seen) and any(v == m for v, m in seen), seen  # it moved
    wait_text(page, "rev-summary", "8 clips cut from 1 recording")  # reviewable at once, without a reload
    assert page.locator("#rev-data input").input_value() == "uploaded-ds"
    page.locator("#prep-transcribe input").uncheck()
    fill(page, "prep-extra", "")
    choose(page, "voc-data", "voice")  # its symbols against a model's vocab, before any launch
    choose(page, "voc-model", "f5tts_tiny")
    said = click_then(page, "voc-go", "voc-msg", "vocab")
    assert SNOWMAN in said and "vocab.accept_unknown=true" in said, said


@screenshot_on_failure
def test_blind_ab_records_the_choice_then_reveals_it(site, page, tmp_path):
    tab(page, "compare")
    choose(page, "ab-a-run", "alpha")
    choose(page, "ab-a-ckpt", "2")
    choose(page, "ab-b-run", "alpha")
    page.locator("#ab-b-ckpt input[role=combobox]").click()  # every picker offers the best scored checkpoint
    assert page.locator("[role=option][aria-label=best]").count() == 1
    page.locator("#ab-b-ckpt input[role=combobox]").blur()
    choose(page, "ab-b-ckpt", "4")
    fill(page, "ab-text", "Which one?")
    fill(page, "ab-nfe", 2)
    choose(page, "ab-vocoder", "griffinlim")
    page.locator("#ab-blind input").check()
    text = click_then(page, "ab-go", "ab-msg", r"\A(blind|error)", 120)
    assert text.startswith("blind") and "model_0000" not in text, text  # nothing says which is which
    first = audio_bytes(page, "ab-out-a")
    click(page, "ab-pick-1")
    reveal = wait_text(page, "ab-msg", r"\Ayou chose")
    entry = json.loads((site.runs / "alpha" / "listening.jsonl").read_text().splitlines()[-1])
    assert entry["choice"] == entry["played_first"] in ("a", "b")
    played = entry[entry["played_first"]]
    assert Path(played["wav"]).read_bytes() == first  # the choice recorded is the side played first
    assert f"1 was {entry['played_first'].upper()} (run alpha, update {played['update']}" in reveal, reveal
