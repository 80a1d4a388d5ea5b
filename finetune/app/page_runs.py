"""Runs: every run folder under the runs root, refreshed while the page is open; a row opens its run page."""
import gradio as gr

from . import runs
from .widgets import Ctx, follow, open_tab

WIDTHS = ["22%", "9%", "8%", "14%", "5%", "6%", "8%", "7%", "8%", "8%", "5%"]  # of runs.COLUMNS


def build(ctx: Ctx, app: gr.Blocks, tab: gr.Tab) -> tuple[gr.Dataframe, gr.Timer]:
    gr.Markdown("Every run under the runs root. The state comes from the run's status.json read against its "
                "lock: a run whose process died without a word shows as `interrupted`. Click a run to open it.")
    # fixed shares: widths measured from the content let a long run name push the last columns off the page
    table = gr.Dataframe(runs.table(ctx.roots.runs), headers=runs.COLUMNS, interactive=False, wrap=True,
                         elem_id="runs-table", max_height=700, column_widths=WIDTHS)
    shown = gr.State(None)

    def refresh(before):
        rows = runs.table(ctx.roots.runs)
        return (gr.skip(), before) if rows == before else (rows, rows)  # redraw only what changed

    app.load(refresh, shown, [table, shown], queue=False)
    return table, follow(tab, refresh, shown, [table, shown], queue=False)


def wire(ctx: Ctx, table: gr.Dataframe, run_pick: gr.Dropdown) -> None:
    def open_run(evt: gr.SelectData):
        name = evt.row_value[0] if evt.row_value else None
        return gr.update(choices=ctx.run_names(), value=name) if name else gr.skip()

    table.select(open_run, None, run_pick, queue=False).then(None, run_pick, None, js=open_tab("run", "v[0]"))
