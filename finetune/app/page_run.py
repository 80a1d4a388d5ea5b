"""Run page: manifest (verified or not), state with its progress, Stop and Resume, curves (loss, memory, time),
checkpoints, samples, and the command that reproduces the run. Everything on it belongs to the run shown:
picking another run clears the messages and the Resume fields, and cancels a wait for a resume's outcome."""
import html
import re
import time

import gradio as gr
import pandas as pd

from finetune.lock.errors import UserError
from finetune.runfolder import CONSOLE

from . import commands, launch, runs
from .fields import check_as_typed, field, values
from .fields import show as as_typed
from .settings import read_lines, settable
from .widgets import Ctx, audio_tag, duration, error, follow, keep_fresh, message

CONSOLE_LINES = 40

# metrics.jsonl key -> plot title; validation loss appears at checkpoints when the run holds clips out
CURVES = {"loss": "train loss", "val_loss": "validation loss (held-out clips)", "lr": "learning rate",
          "grad_norm": "gradient norm", "memory_mb": "peak memory (MB) since the log before",
          "seconds": "training time (s)"}
CURVES_EVERY = 10.0  # seconds between redraws of a training run's curves (the state line follows each tick)
# the amendments a resume needs most, a field each (an out-of-memory run: a smaller batch, or recomputed
# activations); every other key a resume takes is a key=value line
RESUME_WIDGETS = ["train.max_updates", "train.epochs", "train.save_every", "optim.lr", "data.frames_per_batch",
                  "model.arch.checkpoint_activations"]
RATE_WINDOW = 20  # metrics lines the rate is measured over


def _frame(rows: list[dict], key: str) -> pd.DataFrame:
    points = [(r["update"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
    return pd.DataFrame(points, columns=["update", key])


def _shown(part) -> object:
    """What a part of the Run page shows, comparable with ==."""
    if isinstance(part, pd.DataFrame):
        return tuple(part.columns), part.to_numpy().tobytes()
    return repr(part)


def rate(rows: list[dict]) -> float | None:
    """Updates per second of training time over the last logged updates (metrics.jsonl's `seconds`)."""
    timed = [r for r in rows if isinstance(r.get("seconds"), (int, float))][-RATE_WINDOW:]
    if len(timed) == 1:  # one line yet: since the start (seconds count from update 0, over every resume)
        timed = [{"update": 0, "seconds": 0.0}, *timed]
    if len(timed) < 2:
        return None
    du, ds = timed[-1]["update"] - timed[0]["update"], timed[-1]["seconds"] - timed[0]["seconds"]
    return du / ds if du > 0 and ds > 0 else None


def _state_html(run_dir, status, rows) -> str:
    state = runs.state(run_dir, status)
    m, _ = runs.manifest(run_dir)
    done, planned = runs.progress(run_dir, m, status, rows[-1] if rows else None) if m else (None, None)
    done = done or 0
    parts = [f'{html.escape(run_dir.name)}: <b class="state-{state}" id="run-state-value">{state}</b>',
             f'update <span id="run-update">{done}</span> of <span id="run-planned">{planned or "?"}</span>']
    speed = rate(rows)
    if speed:
        parts.append(f'<span id="run-rate">{speed:.3g} updates/s</span>' if speed >= 1 else
                     f'<span id="run-rate">{1 / speed:.3g} s/update</span>')
        if state == "running" and planned and planned > done:
            parts.append(f'<span id="run-left">{duration((planned - done) / speed)} left</span>')
    if rows and isinstance(rows[-1].get("seconds"), (int, float)):
        parts.append(f"trained {duration(rows[-1]['seconds'])}")
    if rows and isinstance(rows[-1].get("memory_mb"), (int, float)):
        parts.append(f"peak memory {rows[-1]['memory_mb']:.0f} MB")
    if status:
        parts.append(f"pid {status.get('pid')} on {html.escape(str(status.get('host')))}")
        if status.get("message"):
            parts.append(html.escape(str(status["message"])))
    bar = f'<progress id="run-progress" value="{done}" max="{planned}"></progress>' if planned else ""
    return '<div class="msg info progress">' + bar + " &middot; ".join(parts) + "</div>"


def _samples_html(run_dir) -> str:
    at, other = runs.samples(run_dir)
    if not at and not other:
        return message("no samples yet (train.log_samples=true writes one at each checkpoint; "
                       "the Synthesize page writes here too)")
    rows = [f"<tr><td>update {u}</td><td>generated {audio_tag(g) if g else '-'}</td>"
            f"<td>reference {audio_tag(r) if r else '-'}</td></tr>" for u, g, r in at]
    rows += [f"<tr><td colspan=2>{html.escape(p.name)}</td><td>{audio_tag(p)}</td></tr>" for p in other[-20:]]
    return f'<table class="samples">{"".join(rows)}</table>'


def _console(run_dir) -> str:
    try:
        text = runs.tail(run_dir / CONSOLE, 20000)
    except OSError:
        return ""
    return "\n".join([ln for ln in re.split(r"[\r\n]+", text) if ln.strip()][-CONSOLE_LINES:])


def _command(run_dir, m) -> str:
    args, warning = commands.reproduce_args(m["config"])
    lines = [commands.shell_line(args)]
    entries, problem = runs.amendments(run_dir, m)
    for entry in entries:  # each resume that changed a setting, in order
        changes = {k: new for k, (_, new) in entry["changes"].items()}
        lines.append(commands.shell_line(commands.resume_args(run_dir, changes)))
    notes = [f"# {warning}"] if warning else []
    notes += [f"# amendments: {problem}"] if problem else []
    return "\n".join(notes + lines)


def signature(ctx: Ctx, run: str | None):
    """What changes while a run trains; the page redraws only when it does."""
    if not run:
        return None
    try:
        run_dir = ctx.roots.run_dir(run)
    except UserError:
        return None

    def stat(name):
        try:
            st = (run_dir / name).stat()
            return st.st_size, st.st_mtime_ns
        except OSError:
            return None
    from finetune.lock.checkpoints import list_checkpoints

    return (run, runs.state(run_dir), stat("metrics.jsonl"), stat("train.log"), stat("status.json"),
            stat("console.log"), tuple(list_checkpoints(run_dir)), len(list((run_dir / "samples").glob("*.wav")))
            if (run_dir / "samples").is_dir() else 0, stat("amendments.jsonl"))


def command(ctx: Ctx, run: str | None) -> str:
    """The reproduce command (composing the config options takes a second or two the first time, then is
    cached)."""
    try:
        run_dir = ctx.roots.run_dir(run)
    except UserError:
        return ""
    m, _ = runs.manifest(run_dir)
    return _command(run_dir, m) if m else ""


def show(ctx: Ctx, run: str | None):
    """The parts of the page that follow the run as it trains: verified, state, curves, checkpoints, samples,
    amendments, manifest text, console, and whether Stop applies."""
    empty = [_frame([], key) for key in CURVES]
    no_stop = gr.update(interactive=False)
    if not run:
        return (message("no run chosen"), "", *empty, [], "", "", "", "", no_stop)
    try:
        run_dir = ctx.roots.run_dir(run)
    except UserError as e:
        return (error(e), "", *empty, [], "", "", "", "", no_stop)
    m, problem = runs.manifest(run_dir)
    text = (run_dir / "manifest.yaml").read_text(encoding="utf-8", errors="replace")
    status = runs.read_status(run_dir)
    rows = runs.read_metrics(run_dir)
    stop = gr.update(interactive=runs.state(run_dir, status) == "running")
    if m is None:
        return (error(f"manifest NOT verified: {problem}"), _state_html(run_dir, status, rows), *empty,
                [], _samples_html(run_dir), "", text, _console(run_dir), stop)
    verified = message(f"manifest verified: content hash {m['sha256'][:16]}… matches "
                       f"({m['model']['name']}, {m['model'].get('family', '')}, created {runs.when(m.get('created'))})", "ok")
    entries, bad = runs.amendments(run_dir, m)
    amend = bad or "\n".join(f"{e['time']}: " + "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in e["changes"].items())
                             for e in entries) or "none"
    return (verified, _state_html(run_dir, status, rows), *(_frame(rows, key) for key in CURVES),
            runs.checkpoint_rows(run_dir, m), _samples_html(run_dir), amend, text, _console(run_dir), stop)


def current_config(ctx: Ctx, run: str | None) -> dict | None:
    """The run's config as it trains now: its manifest's, with every resume's amendments applied."""
    from finetune.runfolder import manifest_and_config

    try:
        return manifest_and_config(ctx.roots.run_dir(run))[1]
    except UserError:
        return None


def _resume_fields(ctx: Ctx, run: str | None, keys) -> list:
    """The Resume fields emptied, each saying the run's current value (what an empty field keeps)."""
    from finetune.lock.schema import flatten

    flat = flatten(current_config(ctx, run) or {})
    out = []
    for key in RESUME_WIDGETS:
        text = f"keep: {as_typed(flat[key])}" if key in flat else "keep"
        out.append(gr.update(value="", choices=[(text, ""), *keys[key].choices]) if keys[key].choices
                   else gr.update(value="", placeholder=text))
    return out


def build(ctx: Ctx, app: gr.Blocks, tab: gr.Tab):
    """The page; returns the run picker, the "New run like this one" button (wired in ui.py) and its timer."""
    keys = settable("resume")
    names = ctx.run_names()
    with gr.Row():
        run = gr.Dropdown(names, value=names[0] if names else None, label="Run", elem_id="run-pick", scale=4)
        stop = gr.Button("Stop", variant="stop", elem_id="run-stop", scale=1, interactive=False)
        like = gr.Button("New run like this one", elem_id="run-like", scale=1)
    state = gr.HTML(elem_id="run-state")
    action = gr.HTML(elem_id="run-message")
    with gr.Accordion("Resume", open=False, elem_id="resume-panel"):
        gr.Markdown("Continues from the newest intact checkpoint. A resume may change the training and runtime "
                    "settings (each change is appended to amendments.jsonl), never the model, its data or the "
                    "optimizer kind. Empty fields keep the run's value (shown in grey).")
        with gr.Row():
            widgets = {k: field(keys[k], "resume", "keep") for k in RESUME_WIDGETS}
        for k, w in widgets.items():
            check_as_typed(keys[k], w)
        extra = gr.Textbox(label="more amendments: key=value, one per line", lines=2, elem_id="resume-extra",
                           info="any key a resume takes: " + ", ".join(k for k in keys if k not in RESUME_WIDGETS)[:300]
                           + "…; or a group's option (optim=..., train=..., logger=...)")
        resume = gr.Button("Resume", variant="primary", elem_id="resume-button")
    verified = gr.HTML(elem_id="run-verified")
    reproduce = gr.Code(label="Reproduce this run", language="shell", interactive=False, elem_id="run-command",
                        wrap_lines=True, lines=2, max_lines=10, elem_classes=["command"])
    curves = []
    items = list(CURVES.items())
    for row in (items[:3], items[3:]):
        with gr.Row():
            curves += [gr.LinePlot(x="update", y=key, title=title, height=220, min_width=240,
                                   elem_id="plot-" + key.replace("_", "-")) for key, title in row]
    ckpts = gr.Dataframe(headers=["update", "binding", "size", "weights"], interactive=False,
                         label="Checkpoints", elem_id="run-checkpoints")
    samples = gr.HTML(elem_id="run-samples")
    amend = gr.Textbox(label="Amendments (resume)", interactive=False, elem_id="run-amendments")
    with gr.Accordion("Manifest", open=False):
        manifest = gr.Code(language="yaml", interactive=False, elem_id="run-manifest")
    with gr.Accordion("Console (newest line last)", open=False, elem_id="console-panel") as console_panel:
        console = gr.Textbox(lines=12, max_lines=12, interactive=False, show_label=False, elem_id="run-console",
                             autoscroll=True)
    # opened, the console shows its newest line (a closed accordion's box keeps its scroll at the top)
    console_panel.expand(None, None, None, js="() => { setTimeout(() => { const t = document.querySelector("
                                              "'#run-console textarea'); if (t) t.scrollTop = t.scrollHeight; }, 100); }")
    seen = gr.State(None)

    # the reproduce command comes in the same response as the rest: as an event of its own, a slow first
    # compose for the run shown at load could land after a newer run's page and show the wrong command
    parts = [verified, state, *curves, ckpts, samples, amend, manifest, console, stop, reproduce]
    fields_ = [widgets[k] for k in RESUME_WIDGETS]
    plots = [parts.index(c) for c in curves]

    def page(r, before=None, now=None):
        """The parts for run r, each skipped where it shows what the browser has, and what they show (`seen`:
        signature, parts, when the curves were drawn, whether they wait). A plot sent is drawn again, six
        plots each tick cost the browser a fifth of a core: while the run trains they wait CURVES_EVERY."""
        now = now or signature(ctx, r)
        fresh = (*show(ctx, r), command(ctx, r))
        shown = [_shown(part) for part in fresh]
        had, drawn = (before[1], before[2]) if before else ((None,) * len(fresh), 0.0)
        changed = any(shown[i] != had[i] for i in plots)
        wait = changed and now is not None and now[1] == "running" and time.monotonic() - drawn < CURVES_EVERY
        if wait:
            for i in plots:
                shown[i] = had[i]
        elif changed:
            drawn = time.monotonic()
        return [*(gr.skip() if s == h else part for part, s, h in zip(fresh, shown, had)),
                (now, tuple(shown), drawn, wait)]

    def tick(r, before):
        now = signature(ctx, r)
        if before and not before[3] and now == before[0]:
            return [gr.skip()] * (len(parts) + 1)
        return page(r, before, now)

    timer = follow(tab, tick, [run, seen], [*parts, seen])

    def do_stop(r):
        try:
            return message(launch.stop(ctx.roots.run_dir(r)), "ok")
        except UserError as e:
            return error(e)

    stopping = stop.click(do_stop, run, action)
    page_fields = {k: k for k in RESUME_WIDGETS}

    def do_resume(r, *texts):
        """Start the resume, then wait for its first outcome: it trains (its status says so), it ends, or it
        is refused (the tool's own line)."""
        try:
            run_dir = ctx.roots.run_dir(r)
            pairs = values([keys[k] for k in RESUME_WIDGETS], texts[:-1]) + \
                read_lines(texts[-1], "resume", page_fields)
            argv = commands.resume_args(run_dir, {}, commands.extra_args(pairs, ctx.roots.confine))
            job = launch.launch_resume(run_dir, argv)
        except UserError as e:
            yield error(e, page_fields), *[gr.skip()] * (len(fields_) + 1)
            return
        line = commands.shell_line(argv)
        waited = 0.0
        while True:
            kind, text = launch.settle_resume(job, run_dir)
            if kind == "refused":
                yield error(text, page_fields), *[gr.skip()] * (len(fields_) + 1)
                return
            if kind in ("started", "finished"):
                said = "resumed" if kind == "started" else "resumed, and already finished"
                yield message(f"{said} (pid {job.pid}): {line}", "ok"), *_resume_fields(ctx, r, keys), ""
                return
            yield (message(f"resuming (pid {job.pid}, {waited:.0f} s): checking the run, its checkpoint and data\n"
                           f"{line}"), *[gr.skip()] * (len(fields_) + 1))
            job.wait(0.5)
            waited += 0.5

    resuming = resume.click(do_resume, [run, *fields_, extra], [action, *fields_, extra])

    def clear(r):
        """Another run: nothing of the run shown before stays (message, Resume fields), at once."""
        return "", *_resume_fields(ctx, r, keys), ""

    # two events: clearing is instant, while the page of a run shown for the first time composes its command
    run.change(clear, run, [action, *fields_, extra], queue=False, show_progress="hidden", cancels=[resuming, stopping])
    run.change(page, run, [*parts, seen], show_progress="hidden")
    keep_fresh(run, ctx.run_names, run.focus, app.load)
    return run, like, timer
