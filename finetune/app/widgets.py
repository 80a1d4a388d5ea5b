"""What the pages share: the context (the roots), messages, file links, and the run / checkpoint / weights picker."""
import html
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from finetune.lock.errors import UserError

from . import runs
from .paths import Roots

REFRESH = 2.0  # seconds between refreshes of what a running trainer changes

CSS = """
.msg { padding: .4em .7em; border-radius: 6px; white-space: pre-wrap; font-family: var(--font-mono); font-size: .9em; }
.msg.error { background: #fde8e8; color: #8a1c1c; border: 1px solid #f5b5b5; }
.msg.ok { background: #e7f6ec; color: #155c2e; border: 1px solid #a9dcb9; }
.msg.info { background: #eef2f8; color: #1f3a5f; border: 1px solid #c6d3e6; }
.samples td { padding: 2px 10px; vertical-align: middle; }
.state-running { color: #155c2e; } .state-crashed, .state-interrupted { color: #8a1c1c; }
.msg.progress progress { width: 40%; min-width: 200px; height: 1em; vertical-align: middle; margin-right: .6em; }
.invalid input, .invalid textarea { border-color: #d33 !important; background: #fff6f6 !important; }
.invalid [data-testid="block-info"], .invalid .info, .invalid span[data-testid="block-info"] { color: #b42318 !important; }
#runs-table table, #cmp-diff table { table-layout: auto; }
#runs-table th, #cmp-diff th, #runs-table th *, #cmp-diff th * { white-space: nowrap; word-break: normal; }
#runs-table .text.wrap, #cmp-diff .text.wrap { overflow-wrap: anywhere; }
.command .cm-content, .command .cm-line { white-space: pre-wrap !important; word-break: break-all; }
.command .cm-scroller { min-height: 3em !important; }
"""


@dataclass(frozen=True)
class Ctx:
    roots: Roots

    def run_names(self) -> list[str]:
        return [p.name for p in runs.list_runs(self.roots.runs)]


def message(text: str, kind: str = "info") -> str:
    return f'<div class="msg {kind}">{html.escape(str(text))}</div>' if text else ""


def error(e, fields: dict[str, str] | None = None) -> str:
    """A refusal as the tools print it: one `error: ...` (or `error[code]: ...`) line; then, for each key it
    names that a field of this page sets (`fields`: key or code -> the field's label), where to set it here."""
    from .launch import REFUSAL, error_code

    text = e.line() if isinstance(e, UserError) else str(e)
    text = text if REFUSAL.match(text) else f"error: {text}"
    named = [k for k in dict.fromkeys(re.findall(r"(?<![\w.])([a-z_][\w]*(?:\.[\w]+)*)=", text)) if k in (fields or {})]
    code = error_code(text)
    if code and code in (fields or {}) and not named:
        named = [code]
    hints = "".join(f"\n→ on this page: {fields[k]}" for k in named)
    return message(text + hints, "error")


def progress_html(what: str, state: dict | None, elem_id: str = "") -> str:
    """A progress bar with `n of total`, the rate and the time left; without a state (nothing reported yet),
    an indeterminate bar."""
    ident = f' id="{html.escape(elem_id)}"' if elem_id else ""
    if not state or not state.get("total"):
        return (f'<div class="msg info progress"{ident}><progress></progress>{html.escape(what)}'
                + (f" ({html.escape(str(state.get('desc')))} {state.get('n')})" if state else "") + "</div>")
    n, total = state["n"], state["total"]
    unit, rate = state.get("unit") or "it", state.get("rate")
    parts = [f"{html.escape(what)} ({html.escape(str(state.get('desc') or ''))}): {n:g} of {total:g} "
             f"{html.escape(unit)}{'s' if total != 1 else ''}"]
    if rate:
        parts.append(f"{rate:.3g} {html.escape(unit)}/s" if rate >= 1 else f"{1 / rate:.3g} s/{html.escape(unit)}")
        if total > n:
            parts.append(f"{duration((total - n) / rate)} left")
    return (f'<div class="msg info progress"{ident}><progress value="{n}" max="{total}"></progress>'
            + " &middot; ".join(parts) + "</div>")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def file_url(path: Path) -> str:
    """Where the browser fetches a file under the runs or data root (served from launch's allowed_paths)."""
    return f"/gradio_api/file={quote(str(path))}"


def audio_tag(path: Path) -> str:
    return f'<audio controls preload="none" src="{html.escape(file_url(path))}"></audio>'


def run_choices(ctx: Ctx, value=None):
    names = ctx.run_names()
    return gr.update(choices=names, value=value if value in names else (names[0] if names else None))


def checkpoint_choices(ctx: Ctx, run: str | None) -> list[str]:
    from finetune.lock.checkpoints import list_checkpoints

    if not run:
        return []
    try:
        return ["last", "best", *(str(u) for u in sorted(list_checkpoints(ctx.roots.run_dir(run)), reverse=True))]
    except UserError:
        return []


def keep_checkpoint(ctx: Ctx, run: str | None, ckpt: str | None):
    """The checkpoint list of a newly picked run: the checkpoint chosen stays when that run has it (a handler
    that sets run and checkpoint together, such as A/B of two scored rows), else `last`."""
    choices = checkpoint_choices(ctx, run)
    return gr.update(choices=choices, value=ckpt if ckpt in choices else "last")


def checkpoint_picker(ctx: Ctx, app: gr.Blocks, prefix: str, label: str = "Run"):
    """Run, checkpoint and weight set, the checkpoint list following the run (and the runs as they are when the
    page loads or the list is opened)."""
    names = ctx.run_names()
    with gr.Row():
        run = gr.Dropdown(names, value=names[0] if names else None, label=label, elem_id=f"{prefix}-run", scale=3)
        # custom values allowed: its choices as built go stale as runs appear, and it is an input of the run's
        # change (Gradio would refuse a value outside them); resolve_checkpoint checks whatever arrives
        ckpt = gr.Dropdown(checkpoint_choices(ctx, names[0] if names else None), value="last", label="Checkpoint",
                           elem_id=f"{prefix}-ckpt", scale=1, allow_custom_value=True)
        weights = gr.Radio(["ema", "online"], value="ema", label="Weights", elem_id=f"{prefix}-weights", scale=1)
    run.change(lambda r, c: keep_checkpoint(ctx, r, c), [run, ckpt], ckpt, queue=False)
    app.load(lambda r: run_choices(ctx, r), run, run, queue=False)
    keep_fresh(run, ctx.run_names)
    keep_fresh(ckpt, lambda r: checkpoint_choices(ctx, r), inputs=run)
    return run, ckpt, weights


def follow(tab: gr.Tab, fn, inputs, outputs, **kwargs) -> gr.Timer:
    """Refresh a tab's content every REFRESH seconds while it is shown, and at once when it is opened. The
    timer starts inactive; ui.py turns on only the shown tab's: every event makes Gradio's frontend copy the
    state of each component any event has updated, so an idle page ticking in a hidden tab costs the browser
    a growing share of a core."""
    timer = gr.Timer(REFRESH, active=False)
    timer.tick(fn, inputs, outputs, show_progress="hidden", **kwargs)
    tab.select(fn, inputs, outputs, show_progress="hidden", **kwargs)
    return timer


def open_tab(tab_id: str, when: str) -> str:
    """JS for a `.then` that opens a tab as a click on its button does (its select event fires too) if `when`, an
    expression of the event's input values `v`, holds. Not `gr.Tabs(selected=...)` as an output: Gradio's frontend
    keeps the loading status of each component that was ever an output, and at every status change of any event
    copies the value of each of them and of all they contain; once the tabs had been an output, each event copied
    the whole page (opening a run cost the browser 1.4 CPU-seconds)."""
    return f"(...v) => {{ if ({when}) document.getElementById('tab-{tab_id}-button').click(); }}"


def keep_fresh(dropdown: gr.Dropdown, choices, *events, inputs=None) -> None:
    """Refresh a dropdown's choices (`choices(*inputs)`) on these events, its focus by default: what appeared
    since the page opened. Choices only: a value sent back would be the one the box had when the event fired,
    and a slow reply would undo a choice made meanwhile."""
    for event in events or (dropdown.focus,):
        event(lambda *values: gr.update(choices=choices(*values)), inputs, dropdown, queue=False)


def resolve_checkpoint(run_dir: Path, ckpt: str, weights: str = "ema") -> int:
    """`last`, `best` (the best scored row of these weights: python -m infer.score's) or an update number, as
    the update it means now (so the output names the checkpoint used)."""
    from finetune.lock.checkpoints import pick_checkpoints
    from finetune.media.scores import resolve_ckpt

    which, _ = resolve_ckpt(run_dir, ckpt or "last", weights)
    return next(iter(pick_checkpoints(run_dir, which)))
