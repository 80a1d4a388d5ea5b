"""Export: a run's checkpoint as one file (our layout, with manifest and vocab inside) or upstream's layout
(`ema_model.*` keys and a vocab file beside), through python -m infer export; offered as a download."""
import html

import gradio as gr

from finetune.lock.errors import UserError

from . import commands, launch
from .widgets import Ctx, checkpoint_picker, error, file_url, message, resolve_checkpoint

LAYOUTS = ["f5tune", "upstream"]


def export_plan(ctx: Ctx, run, ckpt, weights, layout):
    """The argument list and the files it writes, in the run's exports/ folder (named by checkpoint, weights
    and layout: the same export asked for twice is the same file, offered again)."""
    run_dir = ctx.roots.run_dir(run)
    update = resolve_checkpoint(run_dir, ckpt, weights)
    suffix = "" if layout == "f5tune" else "-upstream"
    out = run_dir / "exports" / f"{run_dir.name}-{update:08d}-{weights}{suffix}.safetensors"
    files = [out] + ([out.with_name(out.stem + "_vocab.txt")] if layout == "upstream" else [])
    argv = commands.export_args({"run": str(run_dir), "out": str(out), "ckpt": str(update), "weights": weights,
                                 "layout": layout})
    return argv, files


def links(files) -> str:
    items = "".join(f'<li><a href="{html.escape(file_url(f))}" download="{html.escape(f.name)}">{html.escape(f.name)}'
                    f"</a> ({f.stat().st_size / 1e6:.1f} MB)</li>" for f in files)
    return f'<ul class="exports">{items}</ul>'


def build(ctx: Ctx, app: gr.Blocks) -> None:
    run, ckpt, weights = checkpoint_picker(ctx, app, "exp")
    layout = gr.Radio(LAYOUTS, value="f5tune", label="Layout: f5tune (python -m infer model_file=...) or upstream "
                      "(f5-tts's load_model, with a vocab file)", elem_id="exp-layout")
    go = gr.Button("Export", variant="primary", elem_id="exp-go")
    result = gr.HTML(elem_id="exp-msg")
    download = gr.HTML(elem_id="exp-files")
    command = gr.Code(label="Command", language="shell", interactive=False, elem_id="exp-command", wrap_lines=True,
                      lines=2, max_lines=10, elem_classes=["command"])

    def export(*values):
        try:
            argv, files = export_plan(ctx, *values)
        except UserError as e:
            yield error(e), "", ""
            return
        line = commands.shell_line(argv)
        if all(f.is_file() for f in files):  # exported before: an export never overwrites, and need not
            yield message("exported before; download it below", "ok"), links(files), line
            return
        yield message("exporting…"), gr.skip(), line
        try:
            launch.infer_here(argv)
        except UserError as e:
            yield error(e), "", line
            return
        yield message(f"wrote {files[0]}", "ok"), links(files), line

    go.click(export, [run, ckpt, weights, layout], [result, download, command])
