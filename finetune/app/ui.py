"""The page: one tab per task, each built by its own module (page_*.py) from the widgets they share."""
import gradio as gr

from . import page_compare, page_data, page_export, page_new, page_review, page_run, page_runs, page_synth
from .widgets import Ctx


def build(ctx: Ctx) -> gr.Blocks:
    with gr.Blocks(title="f5tune", analytics_enabled=False) as app:
        gr.Markdown(f"## f5tune &nbsp; <small>runs: `{ctx.roots.runs}` &nbsp; data: `{ctx.roots.data}`</small>")
        with gr.Tabs(selected="runs", elem_id="tabs") as tabs:
            with gr.Tab("Runs", id="runs", elem_id="tab-runs"):
                table = page_runs.build(ctx, app)
            with gr.Tab("Run", id="run", elem_id="tab-run"):
                run_pick = page_run.build(ctx, app)
            with gr.Tab("New fine-tune", id="new", elem_id="tab-new"):
                page_new.build(ctx, app, tabs, run_pick)
            with gr.Tab("Data", id="data", elem_id="tab-data"):
                page_data.build(ctx, app)
                page_review.build(ctx, app)
            with gr.Tab("Synthesize", id="synth", elem_id="tab-synth"):
                page_synth.build(ctx, app)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                page_compare.build(ctx, app)
            with gr.Tab("Export", id="export", elem_id="tab-export"):
                page_export.build(ctx, app)
        page_runs.wire(ctx, table, tabs, run_pick)
    return app
