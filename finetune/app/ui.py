"""The page: one tab per task, each built by its own module (page_*.py) from the widgets they share."""
import gradio as gr

from . import (page_compare, page_data, page_export, page_new, page_run, page_runs, page_synth,
               page_system)
from .widgets import Ctx, open_tab


def build(ctx: Ctx) -> gr.Blocks:
    with gr.Blocks(title="f5tune", analytics_enabled=False, fill_width=True) as app:
        gr.Markdown(f"## f5tune &nbsp; <small>runs: `{ctx.roots.runs}` &nbsp; data: `{ctx.roots.data}`</small>")
        with gr.Tabs(selected="runs", elem_id="tabs") as tabs:
            with gr.Tab("Runs", id="runs", elem_id="tab-runs") as runs_tab:
                table, runs_timer = page_runs.build(ctx, app, runs_tab)
            with gr.Tab("Run", id="run", elem_id="tab-run") as run_tab:
                run_pick, like, run_timer = page_run.build(ctx, app, run_tab)
            with gr.Tab("New fine-tune", id="new", elem_id="tab-new"):
                new_form = page_new.build(ctx, app, run_pick)
            with gr.Tab("Data", id="data", elem_id="tab-data"):
                page_data.build(ctx, app)
            with gr.Tab("Synthesize", id="synth", elem_id="tab-synth"):
                page_synth.build(ctx, app)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                page_compare.build(ctx, app)
            with gr.Tab("Export", id="export", elem_id="tab-export"):
                page_export.build(ctx, app)
            with gr.Tab("System", id="system", elem_id="tab-system"):
                page_system.build(ctx, app)
        page_runs.wire(ctx, table, run_pick)
        tick_where_shown(tabs, {runs_tab.id: runs_timer, run_tab.id: run_timer})

        def like_run(r):
            """New fine-tune, filled with the settings of the run shown (a new name)."""
            config = page_run.current_config(ctx, r)
            if config is None:
                return [gr.skip()] * len(new_form)
            return page_new.fill(ctx, config)

        like.click(like_run, run_pick, new_form).then(None, run_pick, None, js=open_tab("new", "v[0]"))
    return app


def tick_where_shown(tabs: gr.Tabs, timers: dict[str, gr.Timer]) -> None:
    """Only the timer of the tab shown ticks (why: widgets.follow); a tab opened by an event (widgets.open_tab
    clicks its button) fires its select event too."""
    def select(shown):
        return lambda: [gr.Timer(active=tab_id == shown) for tab_id in timers]

    for tab in tabs.children:
        tab.select(select(tab.id), None, list(timers.values()), queue=False, show_progress="hidden")
    for tab_id, timer in timers.items():
        timer.active = tab_id == tabs.selected
