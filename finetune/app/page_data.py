"""Data: prepare a dataset from a folder or metadata file under data_root, or from recordings without
transcripts (python -m finetune.prepare [transcribe=true], its progress and report of skipped rows), and
browse a prepared dataset's clips with audio and text."""
import gradio as gr

from finetune.lock.errors import UserError

from . import commands, datasets, launch
from .paths import inside
from .widgets import Ctx, error, message


def build(ctx: Ctx, app: gr.Blocks) -> None:
    roots = ctx.roots
    gr.Markdown(f"### Prepare a dataset\nInput: a folder of audio files with same-named `.txt` transcripts, an "
                f"LJSpeech folder, a metadata file of `audio_path|text` rows, or a folder upstream prepared; "
                f"relative paths are taken from data_root (`{roots.data}`), and the dataset is written there too.")
    with gr.Row():
        source = gr.Dropdown(datasets.inputs(roots.data), value=None, allow_custom_value=True,
                             label="input (under data_root)", elem_id="prep-input", scale=3)
        out = gr.Textbox(label="output folder (under data_root)", elem_id="prep-out", scale=2)
        model = gr.Dropdown(commands.options("model"), value="f5tts", label="mel settings of model",
                            elem_id="prep-model", scale=1)
    with gr.Row():
        strict = gr.Checkbox(False, label="strict (fail on any bad row)", elem_id="prep-strict")
        min_s = gr.Number(0.3, label="min_seconds", elem_id="prep-min")
        max_s = gr.Number(30.0, label="max_seconds", elem_id="prep-max")
    with gr.Row():
        transcribe = gr.Checkbox(False, label="transcribe: the input is recordings without transcripts (cut at "
                                              "silences, then a Whisper writes the text; review it below)",
                                 elem_id="prep-transcribe", scale=2)
        asr = gr.Textbox(label="recogniser (asr.model: a Whisper folder under data_root or a hub id; empty: "
                               "openai/whisper-large-v3-turbo)", elem_id="prep-asr", scale=2)
        language = gr.Textbox(label="asr.language (empty: detected per clip)", elem_id="prep-language", scale=1)
        slice_min = gr.Number(3.0, label="slice.min_seconds", elem_id="prep-slice-min", scale=1)
        slice_max = gr.Number(15.0, label="slice.max_seconds", elem_id="prep-slice-max", scale=1)
    command = gr.Code(label="Equivalent command", language="shell", interactive=False, elem_id="prep-command")
    go = gr.Button("Prepare", variant="primary", elem_id="prep-go")
    result = gr.HTML(elem_id="prep-result")
    report = gr.Textbox(label="Skipped rows", lines=4, max_lines=12, interactive=False, elem_id="prep-report")

    gr.Markdown("### Browse a prepared dataset")
    found = datasets.prepared(roots.data)
    with gr.Row():
        pick = gr.Dropdown(found, value=found[0] if found else None, label="dataset", elem_id="browse-data", scale=3)
        needle = gr.Textbox(label="filter (text or row)", elem_id="browse-filter", scale=2)
    about = gr.Markdown(elem_id="browse-summary")
    clips = gr.Dataframe(headers=datasets.HEADERS, datatype=["str", "str", "number", "number", "str"],
                         interactive=False, wrap=True, max_height=400, elem_id="browse-clips")
    with gr.Row():
        audio = gr.Audio(label="clip", interactive=False, elem_id="browse-audio", scale=2)
        said = gr.HTML(elem_id="browse-text")

    def args(src, dst, mdl, strict_, lo, hi, transcribe_, recogniser, lang, cut_lo, cut_hi):
        folder = roots.confine(src, "input", roots=(roots.data,))
        target = roots.confine(dst, "out", roots=(roots.data,))
        if target == roots.data or inside(roots.runs, target):
            raise UserError(f"out={dst}: give a new folder under data_root for the dataset", code="app")
        settings = {"input": str(folder), "out": str(target), "model": mdl, "strict": bool(strict_),
                    "min_seconds": lo, "max_seconds": hi}
        if transcribe_:
            settings |= {"transcribe": True, "asr.model": roots.model(recogniser, "asr.model"),
                         "asr.language": (lang or "").strip() or None, "slice.min_seconds": cut_lo,
                         "slice.max_seconds": cut_hi}
        return commands.prepare_args(settings)

    form = [source, out, model, strict, min_s, max_s, transcribe, asr, language, slice_min, slice_max]

    def show(*values):
        try:
            return commands.shell_line(args(*values))
        except UserError as e:
            return f"# error: {e}"

    gr.on([app.load, *(c.change for c in form)], show, form, command, queue=False, show_progress="hidden",
          trigger_mode="always_last")
    source.focus(lambda s: gr.update(choices=datasets.inputs(roots.data), value=s), source, source, queue=False)

    def prepare(*values):
        try:
            argv = args(*values)
            target = roots.confine(values[1], "out", roots=(roots.data,))
        except UserError as e:
            yield error(e), "", gr.skip()
            return
        for kind, text in launch.run_tool(argv, roots.data):
            if kind == "running":
                yield message(f"preparing: {text}"), gr.skip(), gr.skip()
            elif kind == "refused":
                yield error(text), "", gr.skip()
            else:
                _, rep = datasets.summary(target)
                yield (message(f"dataset: {launch.last_line(text, 'dataset:')}", "ok"), rep or "(no skipped rows)",
                       gr.update(choices=datasets.prepared(roots.data), value=str(target.relative_to(roots.data))))

    go.click(prepare, form, [result, report, pick], concurrency_limit=None)

    def browse(d, text):
        if not d:
            return "", []
        try:
            folder = roots.confine(d, "dataset", roots=(roots.data,))
            s, _ = datasets.summary(folder)
        except UserError as e:
            return f"error: {e}", []
        return datasets.describe(s), datasets.clips(folder, text or "")

    pick.change(browse, [pick, needle], [about, clips], queue=False)
    app.load(browse, [pick, needle], [about, clips], queue=False)
    needle.submit(browse, [pick, needle], [about, clips], queue=False)
    pick.focus(lambda d: gr.update(choices=datasets.prepared(roots.data), value=d), pick, pick, queue=False)

    def listen(evt: gr.SelectData):
        row = evt.row_value or []
        if len(row) < len(datasets.HEADERS):
            return None, ""
        try:  # clips of a metadata file may name audio anywhere: only those under the roots are played
            path = roots.confine(row[-1], "audio", roots=(roots.data, roots.runs))
        except UserError as e:
            return None, error(e)
        return str(path), message(f"{row[0]}: {row[1]}")

    clips.select(listen, None, [audio, said], queue=False)
