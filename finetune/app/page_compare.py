"""Compare: two manifests diffed key by key (each run's config as it trains now, amendments applied; paths
compared resolved), a run's checkpoint scores (python -m infer.score) with the best marked, and A/B listening
(the same text, reference and seed through two checkpoints, two runs, EMA against online weights of one
checkpoint, or two rows of the score table), blind by default: the sides shuffled, the listener's choice
recorded in the run folders, then revealed."""
import json

import gradio as gr
import pandas as pd

from finetune.lock.errors import UserError

from . import commands, launch, listening, runs, scores, voice
from .page_synth import FIELDS, random_reference, settle_voice, synth_args, voice_inputs
from .widgets import (Ctx, checkpoint_choices, checkpoint_picker, error, keep_fresh, message, progress_html,
                      resolve_checkpoint, run_choices)

HEADERS = ["key", "A", "B", "same"]


def diff_rows(ctx: Ctx, a: str, b: str, only_differing: bool) -> tuple[str, pd.DataFrame]:
    manifests = []
    for name in (a, b):
        run_dir = ctx.roots.run_dir(name)
        m, problem = runs.manifest(run_dir)
        if m is None:
            raise UserError(problem, code="app")
        manifests.append(runs.as_trained(run_dir, m))
    rows = runs.diff(*manifests)
    differing = [r for r in rows if not r[3]]
    said = message(f"{len(differing)} keys differ, {len(rows) - len(differing)} are the same (each run's config "
                   "with its resumes' amendments; paths compared resolved)")
    if only_differing:
        return said, pd.DataFrame([r[:3] for r in differing], columns=HEADERS[:3])
    return said, pd.DataFrame([[*r[:3], "same" if r[3] else "differs"] for r in rows], columns=HEADERS)


def synth_pair(ctx: Ctx, a: tuple, b: tuple, voice_values, recogniser, silence: bool = False) \
        -> tuple[list, list, list[str], dict]:
    """The same text, reference and seed through two (run, checkpoint, weights): ([wav a, wav b], the sides as
    played, notes, the voice settings)."""
    values, notes = settle_voice(ctx, list(voice_values), recogniser)
    wavs, sides = [], []
    for run, ckpt, weights in (a, b):
        argv, _ = synth_args(ctx, run, ckpt, weights, *values)
        wavs.append(launch.infer_here(argv))
        if silence:
            wavs[-1] = voice.remove_silence(wavs[-1])
        run_dir = ctx.roots.run_dir(run)
        sides.append({"run": run, "update": resolve_checkpoint(run_dir, ckpt, weights), "weights": weights,
                      "wav": str(wavs[-1])})
    text, ref, ref_text, seed, nfe, speed, vocoder = values
    settings = {"gen_text": text or None, "ref_audio": str(ref) if ref else None, "ref_text": ref_text or None,
             "seed": seed, "nfe_step": nfe, "speed": speed, "vocoder": vocoder, "remove_silence": bool(silence)}
    return wavs, sides, notes, settings


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
        for kind, state in launch.run_tool(argv, ctx.roots.data):
            if kind == "running":
                what = "scoring checkpoints" if state else "starting: loading the libraries and the held-out clips"
                yield progress_html(what, state, "sc-progress"), *[gr.skip()] * 3
            elif kind == "refused":
                yield error(state, {"asr.model": "recogniser for WER/CER", "speaker.model": "speaker model"}), \
                    *[gr.skip()] * 3
            else:
                yield show(name, a, b)

    outputs = [said, table, row_a, row_b]
    gr.on([run.change, reload.click], show, [run, row_a, row_b], outputs, queue=False)
    # hidden: the message shows the page's own progress bar (why: page_data's prepare)
    score_btn.click(score, [run, asr, speaker, row_a, row_b], outputs, concurrency_limit=None, show_progress="hidden")
    app.load(lambda v: run_choices(ctx, v), run, run, queue=False).then(show, [run, row_a, row_b], outputs,
                                                                          queue=False)
    keep_fresh(run, ctx.run_names)
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
    table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, max_height=600, elem_id="cmp-diff")

    def compare(x, y, o):
        try:
            return diff_rows(ctx, x, y, o)
        except UserError as e:
            return error(e), pd.DataFrame([], columns=HEADERS)

    gr.on([go.click, only.change], compare, [a, b, only], [summary, table], queue=False, trigger_mode="always_last")
    for dd in (a, b):
        keep_fresh(dd, ctx.run_names, dd.focus, app.load)

    sc_run, sc_a, sc_b, sc_go = score_section(ctx, app)

    gr.Markdown("### A/B listening\nThe same text, reference and seed through two checkpoints (of one run or "
                "two), or the EMA against the online weights of one checkpoint. Blind: the two are played in a "
                "shuffled order as 1 and 2; your choice is recorded in the run folder (listening.jsonl), then which "
                "was which is shown.")
    side_a = checkpoint_picker(ctx, app, "ab-a", "Run A")
    side_b = checkpoint_picker(ctx, app, "ab-b", "Run B")
    side_b[2].value = "online"  # the first question people ask: EMA or online?
    voice, extras = voice_inputs("ab")
    with gr.Row():
        blind = gr.Checkbox(True, label="blind (shuffle the sides; reveal them after my choice)", elem_id="ab-blind")
        go_ab = gr.Button("Synthesize both", variant="primary", elem_id="ab-go")
    result = gr.HTML(elem_id="ab-msg")
    with gr.Row():
        out_a = gr.Audio(label="A", interactive=False, elem_id="ab-out-a")
        out_b = gr.Audio(label="B", interactive=False, elem_id="ab-out-b")
    with gr.Row(visible=False, elem_id="ab-choose") as choose:
        pick_1 = gr.Button("1 sounds better", elem_id="ab-pick-1")
        pick_same = gr.Button("No difference", elem_id="ab-pick-same")
        pick_2 = gr.Button("2 sounds better", elem_id="ab-pick-2")
    pending = gr.State(None)  # the blind pair awaiting a choice
    outputs = [result, out_a, out_b, choose, pending]

    def play(a, b, voice_values, recogniser, silence, is_blind):
        """Both wavs, in a shuffled order when blind; the outputs of the A/B section."""
        try:
            wavs, sides, notes, said = synth_pair(ctx, a, b, voice_values, recogniser, silence)
        except UserError as e:
            return error(e, FIELDS), None, None, gr.update(visible=False), None
        if not is_blind:
            return (message("\n".join([f"A: {wavs[0]}", f"B: {wavs[1]}", *notes]), "ok"),
                    gr.update(value=str(wavs[0]), label="A"), gr.update(value=str(wavs[1]), label="B"),
                    gr.update(visible=False), None)
        b_first = listening.shuffle()
        first, second = (wavs[1], wavs[0]) if b_first else (wavs[0], wavs[1])
        state = {"a": sides[0], "b": sides[1], "b_first": b_first, "voice": said}
        return (message("\n".join(["blind: listen to 1 and 2, then choose; which was A and which B is shown "
                                   "after your choice", *notes])),
                gr.update(value=str(first), label="1"), gr.update(value=str(second), label="2"),
                gr.update(visible=True), json.dumps(state))

    def ab(run_a, ckpt_a, w_a, run_b, ckpt_b, w_b, *rest):
        *voice_values, recogniser, silence, is_blind = rest
        return play((run_a, ckpt_a, w_a), (run_b, ckpt_b, w_b), voice_values, recogniser, silence, is_blind)

    go_ab.click(ab, [*side_a, *side_b, *voice, extras["asr"], extras["silence"], blind], outputs)
    extras["random"].click(lambda r: random_reference(ctx, r), side_a[0], [voice[1], voice[2], result])

    def choose_one(state, choice):
        if not state:
            return message("synthesize a pair first"), gr.skip(), gr.skip(), gr.update(visible=False), None
        pair = json.loads(state)
        a, b = pair["a"], pair["b"]
        try:
            dirs = [ctx.roots.run_dir(a["run"]), ctx.roots.run_dir(b["run"])]
            entry = listening.record(dirs, a, b, pair["b_first"], choice, pair["voice"])
        except (UserError, OSError) as e:
            return error(e), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        order = [("1", b if pair["b_first"] else a, "B" if pair["b_first"] else "A"),
                 ("2", a if pair["b_first"] else b, "A" if pair["b_first"] else "B")]
        chosen = {"a": "A", "b": "B", "same": "no difference"}[entry["choice"]]
        where = ", ".join(str(d / listening.FILE) for d in dict.fromkeys(dirs))
        lines = [f"{n} was {side} ({listening.describe(s)})" for n, s, side in order]
        return (message("\n".join([f"you chose: {chosen}", *lines, f"recorded in {where}"]), "ok"),
                gr.update(label=f"1 = {order[0][2]}"), gr.update(label=f"2 = {order[1][2]}"),
                gr.update(visible=False), None)

    for button, choice in ((pick_1, "first"), (pick_2, "second"), (pick_same, "same")):
        button.click(lambda s, c=choice: choose_one(s, c), pending, outputs)

    def ab_rows(name, a, b, *rest):
        """Two rows of the score table through the A/B path; the pickers then show what was played."""
        *voice_values, recogniser, silence, is_blind = rest
        try:
            picked = [(name, *scores.parse_key(a)), (name, *scores.parse_key(b))]
        except UserError as e:
            return error(e), None, None, gr.update(visible=False), None, *[gr.skip()] * 6
        said = play(picked[0], picked[1], voice_values, recogniser, silence, is_blind)
        pickers = []
        for run, update, weights in picked:
            pickers += [gr.update(choices=ctx.run_names(), value=run),
                        gr.update(choices=checkpoint_choices(ctx, run), value=update), weights]
        return *said, *pickers

    sc_go.click(ab_rows, [sc_run, sc_a, sc_b, *voice, extras["asr"], extras["silence"], blind],
                [*outputs, *side_a, *side_b])
