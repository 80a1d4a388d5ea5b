"""Run page: manifest (verified or not), state with Stop and Resume, curves, checkpoints, samples, and the
command that reproduces the run."""
import html
import re

import gradio as gr
import pandas as pd

from finetune.lock.errors import UserError
from finetune.runfolder import CONSOLE

from . import commands, launch, runs
from .widgets import REFRESH, Ctx, audio_tag, error, message

CONSOLE_LINES = 40


# metrics.jsonl key -> plot title; validation loss appears at checkpoints when the run holds clips out
CURVES = {"loss": "train loss", "val_loss": "validation loss (held-out clips)", "lr": "learning rate",
          "grad_norm": "gradient norm"}


def _frame(rows: list[dict], key: str) -> pd.DataFrame:
    points = [(r["update"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
    return pd.DataFrame(points, columns=["update", key])


def _state_html(run_dir, status) -> str:
    state = runs.state(run_dir, status)
    m, _ = runs.manifest(run_dir)
    done, planned = runs.progress(run_dir, m, status, runs.last_metrics(run_dir)) if m else (None, None)
    parts = [f'{html.escape(run_dir.name)}: <b class="state-{state}" id="run-state-value">{state}</b>',
             f'update <span id="run-update">{done if done is not None else 0}</span> of {planned or "?"}']
    if status:
        parts.append(f"pid {status.get('pid')} on {html.escape(str(status.get('host')))}")
        if status.get("message"):
            parts.append(html.escape(str(status["message"])))
    return '<div class="msg info">' + " &middot; ".join(parts) + "</div>"


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
    """The parts of the page that follow the run as it trains: verified, state, loss, lr, grad, checkpoints,
    samples, amendments, manifest text, console."""
    empty = [_frame([], key) for key in CURVES]
    if not run:
        return (message("no run chosen"), "", *empty, [], "", "", "", "")
    try:
        run_dir = ctx.roots.run_dir(run)
    except UserError as e:
        return (error(e), "", *empty, [], "", "", "", "")
    m, problem = runs.manifest(run_dir)
    text = (run_dir / "manifest.yaml").read_text(encoding="utf-8", errors="replace")
    status = runs.read_status(run_dir)
    if m is None:
        return (error(f"manifest NOT verified: {problem}"), _state_html(run_dir, status), *empty,
                [], _samples_html(run_dir), "", text, _console(run_dir))
    verified = message(f"manifest verified: content hash {m['sha256'][:16]}… matches "
                       f"({m['model']['name']}, {m['model'].get('family', '')}, created {runs.when(m.get('created'))})", "ok")
    rows = runs.read_metrics(run_dir)
    entries, bad = runs.amendments(run_dir, m)
    amend = bad or "\n".join(f"{e['time']}: " + "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in e["changes"].items())
                             for e in entries) or "none"
    return (verified, _state_html(run_dir, status), *(_frame(rows, key) for key in CURVES),
            runs.checkpoint_rows(run_dir, m), _samples_html(run_dir), amend, text,
            _console(run_dir))


def build(ctx: Ctx, app: gr.Blocks) -> gr.Dropdown:
    names = ctx.run_names()
    with gr.Row():
        run = gr.Dropdown(names, value=names[0] if names else None, label="Run", elem_id="run-pick", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id="run-stop", scale=1)
    state = gr.HTML(elem_id="run-state")
    action = gr.HTML(elem_id="run-message")
    with gr.Accordion("Resume", open=False, elem_id="resume-panel"):
        gr.Markdown("Continues from the newest intact checkpoint. Only `train.*`, `optim.*` and `logger.*` may "
                    "change; each change is appended to amendments.jsonl. Empty fields keep the run's value.")
        with gr.Row():
            max_updates = gr.Number(None, label="train.max_updates", precision=0, elem_id="resume-max-updates")
            lr = gr.Number(None, label="optim.lr", elem_id="resume-lr")
            save_every = gr.Number(None, label="train.save_every", precision=0, elem_id="resume-save-every")
        extra = gr.Textbox(label="more amendments (key=value, one per line)", lines=2, elem_id="resume-extra")
        resume = gr.Button("Resume", variant="primary", elem_id="resume-button")
    verified = gr.HTML(elem_id="run-verified")
    reproduce = gr.Code(label="Reproduce this run", language="shell", interactive=False, elem_id="run-command")
    with gr.Row():
        curves = [gr.LinePlot(x="update", y=key, title=title, height=240, min_width=240,
                              elem_id="plot-" + key.replace("_", "-")) for key, title in CURVES.items()]
    ckpts = gr.Dataframe(headers=["update", "binding", "size", "weights"], interactive=False,
                         label="Checkpoints", elem_id="run-checkpoints")
    samples = gr.HTML(elem_id="run-samples")
    amend = gr.Textbox(label="Amendments (resume)", interactive=False, elem_id="run-amendments")
    with gr.Accordion("Manifest", open=False):
        manifest = gr.Code(language="yaml", interactive=False, elem_id="run-manifest")
    with gr.Accordion("Console", open=False):
        console = gr.Textbox(lines=12, max_lines=12, interactive=False, show_label=False, elem_id="run-console")
    seen = gr.State(None)

    # the reproduce command comes in the same response as the rest: as an event of its own, a slow first
    # compose for the run shown at load could land after a newer run's page and show the wrong command
    parts = [verified, state, *curves, ckpts, samples, amend, manifest, console, reproduce]

    def page(r):
        return (*show(ctx, r), command(ctx, r))

    run.change(lambda r: (*page(r), signature(ctx, r)), run, [*parts, seen], show_progress="hidden")
    run.focus(lambda r: gr.update(choices=ctx.run_names(), value=r), run, run, queue=False)
    app.load(lambda r: gr.update(choices=ctx.run_names(), value=r), run, run, queue=False)

    def tick(r, before):
        now = signature(ctx, r)
        if now == before:
            return [gr.skip()] * (len(parts) + 1)
        return [*page(r), now]

    gr.Timer(REFRESH).tick(tick, [run, seen], [*parts, seen], show_progress="hidden")

    def do_stop(r):
        try:
            return message(launch.stop(ctx.roots.run_dir(r)), "ok")
        except UserError as e:
            return error(e)

    stop.click(do_stop, run, action)

    def do_resume(r, n, rate, every, more):
        try:
            run_dir = ctx.roots.run_dir(r)
            amend_ = {"train.max_updates": int(n) if n else None, "optim.lr": float(rate) if rate else None,
                      "train.save_every": int(every) if every else None}
            argv = commands.resume_args(run_dir, amend_, commands.check_extra(more, ctx.roots.confine, amend_only=True))
            job = launch.launch_resume(run_dir, argv)
        except UserError as e:
            yield error(e)
            return
        line = commands.shell_line(argv)
        while True:
            kind, text = launch.settle_resume(job, run_dir)
            if kind == "refused":
                yield error(text)
                return
            if kind in ("started", "finished"):
                yield message(f"resumed (pid {job.pid}): {line}", "ok")
                return
            yield message(f"resuming: {line}\n{text}")
            job.wait(0.5)

    resume.click(do_resume, [run, max_updates, lr, save_every, extra], action)
    return run
