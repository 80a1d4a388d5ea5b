"""Compare: two manifests diffed key by key, and A/B listening (the same text, reference and seed through two
checkpoints, two runs, or EMA against online weights of one checkpoint)."""
import gradio as gr

from finetune.lock.errors import UserError

from . import launch, runs
from .page_synth import synth_args, voice_inputs
from .widgets import Ctx, checkpoint_picker, error, message

HEADERS = ["key", "A", "B", "same"]


def diff_rows(ctx: Ctx, a: str, b: str, only_differing: bool) -> tuple[str, list[list]]:
    manifests = []
    for name in (a, b):
        m, problem = runs.manifest(ctx.roots.run_dir(name))
        if m is None:
            raise UserError(problem)
        manifests.append(m)
    rows = runs.diff(*manifests)
    differing = sum(1 for r in rows if not r[3])
    if only_differing:
        rows = [r for r in rows if not r[3]]
    return message(f"{differing} keys differ, {sum(1 for r in runs.diff(*manifests) if r[3])} are the same"), rows


def build(ctx: Ctx, app: gr.Blocks) -> None:
    names = ctx.run_names()
    gr.Markdown("### Manifests, key by key")
    with gr.Row():
        a = gr.Dropdown(names, value=names[0] if names else None, label="Run A", elem_id="cmp-a")
        b = gr.Dropdown(names, value=names[1] if len(names) > 1 else None, label="Run B", elem_id="cmp-b")
        only = gr.Checkbox(False, label="only the keys that differ", elem_id="cmp-only")
    go = gr.Button("Compare manifests", elem_id="cmp-go")
    summary = gr.HTML(elem_id="cmp-summary")
    table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, max_height=600, elem_id="cmp-diff",
                         column_widths=["34%", "30%", "30%", "6%"])

    def compare(x, y, o):
        try:
            return diff_rows(ctx, x, y, o)
        except UserError as e:
            return error(e), []

    gr.on([go.click, only.change], compare, [a, b, only], [summary, table], queue=False)
    for dd in (a, b):
        dd.focus(lambda v: gr.update(choices=ctx.run_names(), value=v), dd, dd, queue=False)
        app.load(lambda v: gr.update(choices=ctx.run_names(), value=v), dd, dd, queue=False)

    gr.Markdown("### A/B listening\nThe same text, reference and seed through two checkpoints (of one run or "
                "two), or the EMA against the online weights of one checkpoint.")
    side_a = checkpoint_picker(ctx, app, "ab-a", "Run A")
    side_b = checkpoint_picker(ctx, app, "ab-b", "Run B")
    side_b[2].value = "online"  # the first question people ask: EMA or online?
    voice = voice_inputs("ab")
    listen = gr.Button("Synthesize both", variant="primary", elem_id="ab-go")
    result = gr.HTML(elem_id="ab-msg")
    with gr.Row():
        out_a = gr.Audio(label="A", interactive=False, elem_id="ab-out-a")
        out_b = gr.Audio(label="B", interactive=False, elem_id="ab-out-b")

    def ab(run_a, ckpt_a, w_a, run_b, ckpt_b, w_b, *voice_values):
        try:
            argv_a, _ = synth_args(ctx, run_a, ckpt_a, w_a, *voice_values)
            argv_b, _ = synth_args(ctx, run_b, ckpt_b, w_b, *voice_values)
            wav_a = launch.infer_here(argv_a)
            wav_b = launch.infer_here(argv_b)
        except UserError as e:
            return error(e), None, None
        return message(f"A: {wav_a}\nB: {wav_b}", "ok"), str(wav_a), str(wav_b)

    listen.click(ab, [*side_a, *side_b, *voice], [result, out_a, out_b])
