"""Data: upload training audio into data_root; prepare a dataset from a folder or metadata file under data_root,
or from recordings without transcripts (python -m finetune.prepare [transcribe=true], followed with a progress
bar, and its report of skipped rows); check a dataset's symbols against a model's vocab before a launch; browse
a prepared dataset's clips; review the transcripts of a dataset made from recordings (page_review.py)."""
import gradio as gr

from finetune.lock.errors import UserError

from . import commands, datasets, launch, page_review, uploads
from .paths import inside
from .settings import read_lines, settable
from .widgets import Ctx, error, keep_fresh, message, progress_html

# the form's number fields: config key -> (elem_id, label)
NUMBERS = {"min_seconds": ("prep-min", "min_seconds"), "max_seconds": ("prep-max", "max_seconds"),
           "slice.min_seconds": ("prep-slice-min", "slice.min_seconds"),
           "slice.max_seconds": ("prep-slice-max", "slice.max_seconds")}
# keys a field of the form sets (refused as key=value lines)
OWNED = {"input": "input", "out": "output folder", "strict": "strict", "transcribe": "transcribe",
         "asr.model": "recogniser", "asr.language": "asr.language", **{k: k for k in NUMBERS}}
STAGES = {"slice": "cutting the recordings at their silences", "transcribe": "transcribing the clips",
          "prepare": "checking the clips and computing their mel spectrograms"}


def prepare_config(flat: dict) -> dict:
    """The preparation's config (nested) from its schema's defaults and the form's values (dotted keys)."""
    cfg = {}
    for key, s in settable("prepare").items():
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = flat.get(key, s.default)
    return cfg


def range_problem(flat: dict) -> tuple[str | None, str | None]:
    """(key, the refusal) of the first number out of range, as python -m finetune.prepare would refuse it."""
    from finetune.prepare_schema import check_ranges

    cfg = prepare_config({k: v for k, v in flat.items() if v is not None})
    cfg["input"], cfg["out"] = cfg.get("input") or "x", cfg.get("out") or "x"  # checked when Prepare is pressed
    try:
        check_ranges(cfg)
    except UserError as e:
        return str(e).split("=", 1)[0], str(e)
    return None, None


def vocab_report(folder, model: str) -> tuple[str, str]:
    """(kind, what to say) of a prepared dataset's symbols against a model's vocab, as a run would check them."""
    from types import SimpleNamespace

    from finetune.config import model_config
    from finetune.media.dataset import read_dataset
    from finetune.lock.vocab import default_vocab_path, read_vocab, tokenize, unknown_symbols

    spec = model_config(model)
    vocab, _ = read_vocab(spec["vocab"] or default_vocab_path())
    clips = [SimpleNamespace(tokens=c.get("tokens") or tokenize(c["text"], spec["tokenizer"]), where=c["row"])
             for c in read_dataset(folder)["clips"]]
    unknown = unknown_symbols(clips, vocab)
    if not unknown:
        return "ok", (f"every symbol of the {len(clips)} clips is in the vocab of model={model} ({len(vocab)} "
                      f"symbols, {spec['tokenizer']} tokenizer): a run needs no vocab choice")
    listed = "\n".join(f"  {s!r} x{n} (e.g. {where})" for s, (n, where) in list(unknown.items())[:20])
    more = f"\n  and {len(unknown) - 20} more" if len(unknown) > 20 else ""
    return "error", (f"{len(unknown)} symbols of the data are not in the vocab of model={model} ({len(vocab)} "
                     f"symbols):\n{listed}{more}\nA run on it needs a choice on New fine-tune's Vocab field: extend "
                     "the vocab (vocab.extend=true) or map them to the unknown token 0 (vocab.accept_unknown=true)")


def build(ctx: Ctx, app: gr.Blocks) -> None:
    roots = ctx.roots
    keys = settable("prepare")
    gr.Markdown(f"### Upload training audio\nAudio files (wav, flac, ogg, mp3) with same-named `.txt` transcripts, "
                f"a metadata file of `audio_path|text` rows with its audio, recordings to transcribe, or a `.zip` of "
                f"them: stored in a new folder under data_root (`{roots.data}`), at most "
                f"{uploads.LIMIT_BYTES / 1024 ** 3:.0f} GB; then prepare it below.")
    with gr.Row():
        files = gr.File(file_count="multiple", label="files or a zip", elem_id="up-files", scale=3,
                        file_types=[*uploads.AUDIO, *uploads.TEXT, ".zip"])
        with gr.Column(scale=1):
            up_name = gr.Textbox(label="into the folder (under data_root)", elem_id="up-folder")
            up_go = gr.Button("Upload", elem_id="up-go")
    up_msg = gr.HTML(elem_id="up-msg")

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
        numbers = {k: gr.Number(keys[k].default, label=label, elem_id=elem, info=keys[k].describe())
                   for k, (elem, label) in NUMBERS.items() if not k.startswith("slice.")}
    with gr.Row():
        transcribe = gr.Checkbox(False, label="transcribe: the input is recordings without transcripts (cut at "
                                              "silences, then a Whisper writes the text; review it below)",
                                 elem_id="prep-transcribe", scale=2)
        asr = gr.Textbox(label=f"recogniser (asr.model: a Whisper folder under data_root or a hub id; empty: "
                               f"{keys['asr.model'].default})", elem_id="prep-asr", scale=2)
        language = gr.Textbox(label="asr.language (empty: detected per clip)", elem_id="prep-language", scale=1)
        numbers |= {k: gr.Number(keys[k].default, label=label, elem_id=elem, scale=1, info=keys[k].describe())
                    for k, (elem, label) in NUMBERS.items() if k.startswith("slice.")}
    extra = gr.Textbox(label="more settings: key=value, one per line", lines=1, elem_id="prep-extra",
                       info="any other key of python -m finetune.prepare: " +
                            ", ".join(k for k in keys if k not in OWNED))
    check = gr.HTML(elem_id="prep-check")
    command = gr.Code(label="Equivalent command", language="shell", interactive=False, elem_id="prep-command",
                      wrap_lines=True, lines=2, max_lines=10, elem_classes=["command"])
    go = gr.Button("Prepare", variant="primary", elem_id="prep-go")
    result = gr.HTML(elem_id="prep-result")
    report = gr.Textbox(label="Skipped rows", lines=4, max_lines=12, interactive=False, elem_id="prep-report")

    gr.Markdown("### Vocab check\nA prepared dataset's symbols (after the model's tokenizer) against a model's "
                "vocab, as a run checks them before it trains.")
    found = datasets.prepared(roots.data)
    with gr.Row():
        voc_data = gr.Dropdown(found, value=found[0] if found else None, label="dataset", elem_id="voc-data", scale=3)
        voc_model = gr.Dropdown(commands.options("model"), value="f5tts", label="model", elem_id="voc-model", scale=1)
        voc_go = gr.Button("Check the vocab", elem_id="voc-go", scale=1)
    voc_msg = gr.HTML(elem_id="voc-msg")

    gr.Markdown("### Browse a prepared dataset")
    with gr.Row():
        pick = gr.Dropdown(found, value=found[0] if found else None, label="dataset", elem_id="browse-data", scale=3)
        needle = gr.Textbox(label="filter (text or row)", elem_id="browse-filter", scale=2)
    about = gr.Markdown(elem_id="browse-summary")
    clips = gr.Dataframe(headers=["row", "text", "seconds", "audio"], interactive=False, wrap=True, max_height=400,
                         elem_id="browse-clips", column_widths=["18%", "52%", "8%", "22%"])
    with gr.Row():
        audio = gr.Audio(label="clip", interactive=False, elem_id="browse-audio", scale=2)
        said = gr.HTML(elem_id="browse-text")

    review = page_review.build(ctx, app)

    number_keys = list(NUMBERS)

    def args(src, dst, mdl, strict_, transcribe_, recogniser, lang, more, *nums):
        folder = roots.confine(src, "input", roots=(roots.data,))
        target = roots.confine(dst, "out", roots=(roots.data,))
        if target == roots.data or inside(roots.runs, target):
            raise UserError(f"out={dst}: give a new folder under data_root for the dataset", code="app")
        flat = dict(zip(number_keys, nums))
        settings = {"input": str(folder), "out": str(target), "model": mdl, "strict": bool(strict_),
                    "min_seconds": flat["min_seconds"], "max_seconds": flat["max_seconds"]}
        if transcribe_:
            settings |= {"transcribe": True, "asr.model": roots.model(recogniser, "asr.model"),
                         "asr.language": (lang or "").strip() or None,
                         "slice.min_seconds": flat["slice.min_seconds"], "slice.max_seconds": flat["slice.max_seconds"]}
        settings |= dict(read_lines(more, "prepare", OWNED))
        key, problem = range_problem({k: v for k, v in settings.items() if k in keys})
        if problem:
            raise UserError(problem, code="app")
        return commands.prepare_args(settings)

    form = [source, out, model, strict, transcribe, asr, language, extra, *(numbers[k] for k in number_keys)]

    def show(*values):
        try:
            line = commands.shell_line(args(*values))
        except UserError as e:
            line = f"# error: {e}"
        # the numbers' range errors at their fields, before anything runs
        try:
            flat = dict(zip(number_keys, values[-len(number_keys):])) | dict(read_lines(values[7], "prepare", OWNED))
            key, problem = range_problem(flat if values[4] else {k: v for k, v in flat.items()
                                                                  if not k.startswith("slice.")})
        except UserError as e:
            key, problem = None, str(e)
        marks = [gr.update(info=f"⚠ {problem}", elem_classes=["invalid"]) if k == key else
                 gr.update(info=keys[k].describe(), elem_classes=[]) for k in number_keys]
        return line, (message(f"⚠ {problem}", "error") if problem else ""), *marks

    gr.on([app.load, *(c.change for c in form)], show, form, [command, check, *(numbers[k] for k in number_keys)],
          queue=False, show_progress="hidden", trigger_mode="always_last")
    keep_fresh(source, lambda: datasets.inputs(roots.data))

    def upload(chosen, name):
        try:
            target, written = uploads.store(roots, chosen or [], name)
        except UserError as e:
            return error(e), gr.skip(), gr.skip(), gr.skip()
        rel = str(target.relative_to(roots.data))
        return (message(uploads.describe(target, written, roots.data), "ok"), None,
                gr.update(choices=datasets.inputs(roots.data), value=rel), f"{rel}-dataset")

    up_go.click(upload, [files, up_name], [up_msg, files, source, out], concurrency_limit=1,
                concurrency_id="upload")

    def prepare(*values):
        try:
            argv = args(*values)
            target = roots.confine(values[1], "out", roots=(roots.data,))
        except UserError as e:
            yield error(e, OWNED), "", *[gr.skip()] * 5
            return
        for kind, state in launch.run_tool(argv, roots.data):
            if kind == "running":
                what = STAGES.get((state or {}).get("desc"), "starting: loading the libraries")
                yield progress_html(what, state, "prep-progress"), gr.skip(), *[gr.skip()] * 5
            elif kind == "refused":
                yield error(state, OWNED), "", *[gr.skip()] * 5
            else:
                _, rep = datasets.summary(target)
                rel = str(target.relative_to(roots.data))
                found = datasets.prepared(roots.data)
                done = message(f"dataset: {launch.last_line(state, 'dataset:')}", "ok")
                yield (done, rep or "(no skipped rows)", gr.update(choices=found, value=rel),
                       gr.update(choices=found, value=rel), *review.after_prepare(rel))

    # hidden: the result shows the page's own progress bar; Gradio's overlay on each of the seven outputs repeated it,
    # with a timer each (a pending event's timers kept the browser at a third of a core)
    go.click(prepare, form, [result, report, pick, voc_data, *review.outputs],
             concurrency_limit=None, show_progress="hidden")

    def check_vocab(d, m):
        try:
            kind, text = vocab_report(roots.confine(d, "dataset", roots=(roots.data,)), m)
        except UserError as e:
            return error(e)
        return message(text, kind)

    voc_go.click(check_vocab, [voc_data, voc_model], voc_msg)
    keep_fresh(voc_data, lambda: datasets.prepared(roots.data))

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
    keep_fresh(pick, lambda: datasets.prepared(roots.data))
    # a saved review prepares its dataset again: Browse shows it as it is now
    review.saved.then(browse, [pick, needle], [about, clips], queue=False)

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
