"""Data, transcript review: the clips of a dataset prepared from recordings (transcribe=true) with a player, the
text (editable) and what the recogniser heard; a clip can be dropped and restored. Saving writes the dataset's
metadata.csv and prepares it again, reusing cached mel (finetune.review.save_review, in this process, one save
at a time in Gradio's queue)."""
from dataclasses import dataclass

import gradio as gr

from finetune.lock.errors import UserError

from . import datasets, transcripts
from .widgets import Ctx, error, keep_fresh, message


@dataclass
class Review:
    """What the Data page wires to: the outputs a finished preparation updates, and the save event."""
    outputs: list
    after_prepare: object  # dataset (relative to data_root) -> updates of `outputs`
    saved: object  # the save's event: .then() runs after it


def build(ctx: Ctx, app: gr.Blocks) -> Review:
    roots = ctx.roots
    gr.Markdown("### Review transcripts\nA dataset prepared from recordings (`transcribe=true`): listen to each "
                "clip, correct its text (double-click the cell), tick **drop** to leave a clip out (untick to "
                "restore it: also a short piece of speech the slicer could not join to a neighbour, or a clip "
                "under `filter.min_quality`). Click a header to sort (by quality, for one). **Save** writes the "
                "dataset's `metadata.csv` and prepares it again: the mel of every clip is reused and the recogniser "
                "is not run again.")
    found = datasets.reviewable(roots.data)
    with gr.Row():
        pick = gr.Dropdown(found, value=found[0] if found else None, label="dataset prepared from recordings",
                           elem_id="rev-data", scale=4)
        reload = gr.Button("Reload", elem_id="rev-reload", scale=1)
    about = gr.Markdown(elem_id="rev-summary")
    clips = gr.Dataframe(headers=transcripts.HEADERS, datatype=transcripts.DATATYPES, interactive=True,
                         static_columns=transcripts.STATIC, type="array", wrap=True, max_height=600,
                         elem_id="rev-clips", column_widths=["10%", "20%", "5%", "21%", "13%", "6%", "5%", "5%", "8%", "7%"])
    save = gr.Button("Save and prepare again", variant="primary", elem_id="rev-save")
    result = gr.HTML(elem_id="rev-result")

    def listing(d):
        folder = roots.confine(d, "dataset", roots=(roots.data,))
        found = transcripts.clips(folder)
        try:
            summary, _ = datasets.summary(folder)
        except UserError:  # every clip dropped or refused: no dataset.json, the clips are still listed
            summary = None
        return folder, found, summary

    def show(d):
        if not d:
            return message("no dataset prepared from recordings under data_root yet (python -m finetune.prepare "
                           "input=<recordings> transcribe=true out=...)"), []
        try:
            _, found, summary = listing(d)
        except UserError as e:
            return error(e), []
        return transcripts.describe(found, summary), transcripts.table(found, roots.data)

    def refresh(d):
        """The datasets prepared since the app started; with none chosen, the first one (and its clips)."""
        found = datasets.reviewable(roots.data)
        chosen = d if d in found else (found[0] if found else None)
        return gr.update(choices=found, value=chosen), *show(chosen)

    gr.on([pick.change, reload.click], show, pick, [about, clips], queue=False)
    app.load(refresh, pick, [pick, about, clips], queue=False)
    keep_fresh(pick, lambda: datasets.reviewable(roots.data))

    def after_prepare(rel: str):
        found = datasets.reviewable(roots.data)
        chosen = rel if rel in found else None
        if chosen is None:  # not one from recordings: only the list follows
            return gr.update(choices=found), gr.skip(), gr.skip()
        return gr.update(choices=found, value=chosen), *show(chosen)

    def store(d, rows):
        try:
            folder, found, _ = listing(d)
            texts, dropped = transcripts.decisions(found, rows)
            if not texts and not dropped:
                return message("nothing to save: no text changed and no clip dropped or restored"), gr.skip(), \
                    gr.skip()
            from finetune.review import save_review

            save_review(folder, texts, dropped)
            _, found, summary = listing(d)
        except UserError as e:
            return error(e), gr.skip(), gr.skip()
        s = summary or {}
        done = f"{len(texts)} text(s) saved, {len(dropped)} clip(s) dropped"
        return (message(f"dataset: {folder} ({s.get('clips')} clips, sha256 {str(s.get('sha256'))[:12]}); {done}",
                        "ok"), transcripts.describe(found, summary), transcripts.table(found, roots.data))

    # in the queue, one save at a time: a save prepares the dataset again (seconds to minutes) in this process
    saved = save.click(store, [pick, clips], [result, about, clips], concurrency_limit=1, concurrency_id="review-save")
    return Review([pick, about, clips], after_prepare, saved)
