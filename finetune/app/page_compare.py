"""Compare: two manifests diffed key by key, a run's checkpoint scores (python -m infer.score) with the best
marked, and A/B listening (the same text, reference and seed through two checkpoints, two runs, EMA against
online weights of one checkpoint, or two rows of the score table)."""
import gradio as gr

from finetune.lock.errors import UserError

from . import commands, launch, runs, scores
from .page_synth import synth_args, voice_inputs
from .widgets import Ctx, checkpoint_choices, checkpoint_picker, error, message, run_choices

HEADERS = ["key", "A", "B", "same"]


def diff_rows(ctx: Ctx, a: str, b: str, only_differing: bool) -> tuple[str, list[list]]:
    manifests = []
    for name in (a, b):
        m, problem = runs.manifest(ctx.roots.run_dir(name))
        if m is None:
            raise UserError(problem, code="app")
        manifests.append(m)
    rows = runs.diff(*manifests)
    differing = [r for r in rows if not r[3]]
    said = message(f"{len(differing)} keys differ, {len(rows) - len(differing)} are the same")
    return said, differing if only_differing else rows


def listen(ctx: Ctx, a: tuple, b: tuple, voice_values) -> tuple[str, str | None, str | None]:
    """The same text, reference and seed through two (run, checkpoint, weights): the message and both wavs."""
    try:
        argv_a, _ = synth_args(ctx, *a, *voice_values)
        argv_b, _ = synth_args(ctx, *b, *voice_values)
        wav_a = launch.infer_here(argv_a)
        wav_b = launch.infer_here(argv_b)
    except UserError as e:
        return error(e), None, None
    return message(f"A: {wav_a}\nB: {wav_b}", "ok"), str(wav_a), str(wav_b)


def score_section(ctx: Ctx, app: gr.Blocks):
    """The score table of a run, and the two rows picked for A/B: (run, row A, row B, button)."""
    names = ctx.run_names()
    gr.Markdown("### Checkpoint scores\nA run's scores from `python -m infer.score`: validation loss on its held-out "
                "clips, the quality score (predicted MOS, offline) of speech it synthesised, and with a recogniser "
                "and a speaker model the WER, CER and speaker similarity of that speech. Pick two rows to hear them "
                "with the A/B settings below.")
    with gr.Row():
        run = gr.Dropdown(names, value=names[0] if names else None, label="Run", elem_id="sc-run", scale=4)
        reload = gr.Button("Reload", elem_id="sc-reload", scale=1)
    with gr.Row():
        asr = gr.Textbox(label="recogniser for WER/CER (asr.model: a Whisper folder under data_root or a hub id; "
                               "empty: loss and quality only)", elem_id="sc-asr", scale=2)
        speaker = gr.Textbox(label="speaker model for similarity (speaker.model; empty: none)", elem_id="sc-speaker",
                             scale=2)
        score_btn = gr.Button("Score every checkpoint", elem_id="sc-score", scale=1)
    said = gr.HTML(elem_id="sc-msg")
    table = gr.Dataframe(headers=scores.HEADERS, interactive=False, max_height=400, elem_id="sc-table")
    with gr.Row():
        row_a = gr.Dropdown([], label="row for A", elem_id="sc-a", scale=2)
        row_b = gr.Dropdown([], label="row for B", elem_id="sc-b", scale=2)
        go = gr.Button("A/B these two rows", variant="primary", elem_id="sc-ab", scale=1)

    def show(name, a, b):
        try:
            text, rows, choices, (first, second) = scores.score_table(ctx.roots.run_dir(name))
        except UserError as e:
            return error(e), [], gr.update(choices=[], value=None), gr.update(choices=[], value=None)
        values = [v for _, v in choices]
        return (message(text, "ok" if rows else "info"), rows,
                gr.update(choices=choices, value=a if a in values else first),
                gr.update(choices=choices, value=b if b in values else second))

    def score(name, recogniser, speaker_model, a, b):
        """python -m infer.score on every checkpoint of the run, followed; then the table again."""
        try:
            argv = commands.score_args({"run": str(ctx.roots.run_dir(name)),
                                        "asr.model": ctx.roots.model(recogniser, "asr.model"),
                                        "speaker.model": ctx.roots.model(speaker_model, "speaker.model")})
        except UserError as e:
            yield error(e), *[gr.skip()] * 3
            return
        for kind, text in launch.run_tool(argv, ctx.roots.data):
            if kind == "running":
                yield message(f"scoring: {text}"), *[gr.skip()] * 3
            elif kind == "refused":
                yield error(text), *[gr.skip()] * 3
            else:
                yield show(name, a, b)

    outputs = [said, table, row_a, row_b]
    gr.on([run.change, reload.click], show, [run, row_a, row_b], outputs, queue=False)
    score_btn.click(score, [run, asr, speaker, row_a, row_b], outputs, concurrency_limit=None)
    app.load(lambda v: run_choices(ctx, v), run, run, queue=False).then(show, [run, row_a, row_b], outputs,
                                                                          queue=False)
    run.focus(lambda v: gr.update(choices=ctx.run_names(), value=v), run, run, queue=False)
    return run, row_a, row_b, go


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

    gr.on([go.click, only.change], compare, [a, b, only], [summary, table], queue=False, trigger_mode="always_last")
    for dd in (a, b):
        dd.focus(lambda v: gr.update(choices=ctx.run_names(), value=v), dd, dd, queue=False)
        app.load(lambda v: gr.update(choices=ctx.run_names(), value=v), dd, dd, queue=False)

    sc_run, sc_a, sc_b, sc_go = score_section(ctx, app)

    gr.Markdown("### A/B listening\nThe same text, reference and seed through two checkpoints (of one run or "
                "two), or the EMA against the online weights of one checkpoint.")
    side_a = checkpoint_picker(ctx, app, "ab-a", "Run A")
    side_b = checkpoint_picker(ctx, app, "ab-b", "Run B")
    side_b[2].value = "online"  # the first question people ask: EMA or online?
    voice = voice_inputs("ab")
    go_ab = gr.Button("Synthesize both", variant="primary", elem_id="ab-go")
    result = gr.HTML(elem_id="ab-msg")
    with gr.Row():
        out_a = gr.Audio(label="A", interactive=False, elem_id="ab-out-a")
        out_b = gr.Audio(label="B", interactive=False, elem_id="ab-out-b")

    def ab(run_a, ckpt_a, w_a, run_b, ckpt_b, w_b, *voice_values):
        return listen(ctx, (run_a, ckpt_a, w_a), (run_b, ckpt_b, w_b), voice_values)

    go_ab.click(ab, [*side_a, *side_b, *voice], [result, out_a, out_b])

    def ab_rows(name, a, b, *voice_values):
        """Two rows of the score table through the A/B path; the pickers then show what was played."""
        try:
            picked = [(name, *scores.parse_key(a)), (name, *scores.parse_key(b))]
        except UserError as e:
            return error(e), None, None, *[gr.skip()] * 6
        said, wav_a, wav_b = listen(ctx, picked[0], picked[1], voice_values)
        pickers = []
        for run, update, weights in picked:
            pickers += [gr.update(choices=ctx.run_names(), value=run),
                        gr.update(choices=checkpoint_choices(ctx, run), value=update), weights]
        return said, wav_a, wav_b, *pickers

    sc_go.click(ab_rows, [sc_run, sc_a, sc_b, *voice], [result, out_a, out_b, *side_a, *side_b])
