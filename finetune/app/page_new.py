"""New fine-tune: a form made from the schema (settings.py): model, data, pretrained weights and run name in
fields of their own, a field for each common setting, and key=value lines for every other key a run may set;
each value checked as it is typed. Shows the command, then starts it detached and follows it until it trains
or is refused. A vocab refusal offers its two ways on."""
from datetime import datetime
from pathlib import Path

import gradio as gr

from finetune.config import parse_override
from finetune.lock.errors import UserError

from . import commands, datasets, launch
from .fields import check_as_typed, default_label, empty_label, field, show
from .settings import UNSET, groups, read_lines, settable
from .widgets import Ctx, error, keep_fresh, message, open_tab

DEMO = "demo (the two clips f5-tts ships)"
PRETRAINED = ["model default", "none (from scratch)", "local file", "another run"]
# the common settings, a field each, by row; every other key of settable("new") is a key=value line
WIDGETS = [["train.epochs", "train.max_updates", "train.save_every", "train.keep_last_n", "train.seed"],
           ["optim.lr", "optim.warmup_updates", "optim.grad_accumulation_steps", "optim.max_grad_norm", "optim.name"],
           ["data.frames_per_batch", "data.max_samples", "data.val_clips", "train.mixed_precision",
            "model.arch.checkpoint_activations"],
           ["train.log_samples", "train.log_every", "adapter.rank", "adapter.alpha", "adapter.dropout"]]
GROUPS = ["vocoder", "logger", "adapter"]  # config groups with a field each (experiment: the preset)
VOCAB = {"": {}, "extend": {"vocab.extend": True}, "accept_unknown": {"vocab.accept_unknown": True}}
VOCAB_CHOICES = [("refuse symbols the model's vocab lacks (then choose)", ""),
                 ("extend the vocab with them (vocab.extend=true)", "extend"),
                 ("map them to the unknown token 0 (vocab.accept_unknown=true)", "accept_unknown")]
# keys and groups a field of the page sets (its label): refused as key=value lines, named in refusals
OWNED = {"model": "Model", "experiment": "Preset", "data": "Dataset", "data.path": "Dataset", "data.name": "Dataset",
         "data.kind": "Dataset", "pretrained": "Start from", "model.pretrained": "Start from",
         "run.name": "Run name", "run.root": "the app's runs= folder (fixed)", "vocab.extend": "Vocab",
         "vocab.accept_unknown": "Vocab", "vocab": "Vocab", **{g: g for g in GROUPS}}
NAMES = ["model", "preset", "data", "pretrained", "pre_file", "pre_run", "name", "vocab", *GROUPS, "extra"]


def widget_keys() -> list[str]:
    return [k for row in WIDGETS for k in row]


def fields_of_page() -> dict[str, str]:
    """Every key or group a field of this page sets -> that field's label (for refusals, and the key=value lines)."""
    return OWNED | {k: k for k in widget_keys()} | {"accept_unknown": "Vocab", "extend": "Vocab"}


def form_args(ctx: Ctx, v: dict) -> tuple[list[str], Path]:
    """The form (field name or key -> value) as a `python -m finetune` argument list and the run folder it writes."""
    roots = ctx.roots
    model = v["model"]
    if model not in commands.options("model"):
        raise UserError(f"model={model}: choose one of {', '.join(commands.options('model'))}", code="range")
    settings = {}
    if v["preset"]:
        settings["experiment"] = v["preset"]
    data = v["data"]
    if data and data != DEMO:
        folder = roots.confine(data, "data.path", base=roots.data, roots=(roots.data,))
        datasets.summary(folder)  # not a prepared dataset: its one-line reason, before anything starts
        settings |= {"data": "custom", "data.path": str(folder)}
    elif data == DEMO:
        settings["data"] = "demo"
    else:
        raise UserError("choose a dataset (prepare one on the Data page) or the demo clips", code="app")
    if v["pretrained"] == PRETRAINED[1]:
        settings["pretrained"] = None  # null: from scratch
    elif v["pretrained"] == PRETRAINED[2]:
        settings["pretrained"] = str(roots.confine(v["pre_file"], "pretrained"))
    elif v["pretrained"] == PRETRAINED[3]:
        settings["pretrained"] = str(roots.run_dir(v["pre_run"]))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = (v["name"] or "").strip() or f"{model}-{'demo' if data == DEMO else Path(str(data)).name}-{stamp}"
    run_dir = roots.run_dir(name, must_exist=False)
    settings |= {"run.root": str(roots.runs), "run.name": name}
    for group in GROUPS:
        if v[group]:
            settings[group] = v[group]
    keys = settable("new")
    for key in widget_keys():
        value = keys[key].check(v[key])
        if value is not UNSET:
            settings[key] = value
    settings |= VOCAB.get(v["vocab"] or "", {})
    extra = commands.extra_args(read_lines(v["extra"], "new", fields_of_page()), roots.confine)
    return commands.finetune_args(model, settings, extra), run_dir


def build(ctx: Ctx, app: gr.Blocks, run_pick: gr.Dropdown):
    """The page; returns its fields (NAMES + widget_keys() order), which "New run like this one" on the Run page
    fills (fill())."""
    roots = ctx.roots
    keys = settable("new")
    with gr.Row():
        model = gr.Dropdown(commands.options("model"), value="f5tts", label="Model (conf/model)", elem_id="new-model")
        presets = commands.options("experiment") if (commands.CONF_DIR / "experiment").is_dir() else []
        preset = gr.Dropdown(["", *presets], value="", label="Preset (conf/experiment; empty: none)",
                             elem_id="new-preset", visible=bool(presets))
        name = gr.Textbox(label="Run name (empty: <model>-<data>-<time>)", elem_id="new-name")
    with gr.Row():
        data = gr.Dropdown([DEMO, *datasets.prepared(roots.data)], value=DEMO, label=f"Dataset (under {roots.data})",
                           elem_id="new-data", scale=2, allow_custom_value=True)
        pretrained = gr.Radio(PRETRAINED, value=PRETRAINED[0], label="Start from", elem_id="new-pretrained", scale=2)
    with gr.Row():
        pre_file = gr.Textbox(label="pretrained file (.pt / .safetensors, under the runs or data root)",
                              elem_id="new-pretrained-file", visible=False)
        pre_run = gr.Dropdown(ctx.run_names(), label="pretrained run (its last checkpoint)",
                              elem_id="new-pretrained-run", visible=False)
    summary = gr.Markdown(elem_id="new-data-summary")
    report = gr.Textbox(label="Skipped rows (report.txt)", lines=3, max_lines=8, interactive=False,
                        elem_id="new-data-report", visible=False)
    with gr.Accordion("Training settings (empty: the config's value, shown in grey)", open=True):
        with gr.Row():
            vocoder = gr.Dropdown([("default", ""), *commands.options("vocoder")], value="", label="vocoder",
                                  elem_id="new-vocoder")
            logger = gr.Dropdown([("default", ""), *commands.options("logger")], value="", label="logger",
                                 elem_id="new-logger")
            adapter = gr.Dropdown([("default", ""), *commands.options("adapter")], value="",
                                  label="adapter (lora: LoRA on the frozen pretrained model)", elem_id="new-adapter")
            vocab = gr.Dropdown(VOCAB_CHOICES, value="", label="Vocab: symbols of the data the model lacks",
                                elem_id="new-vocab-choice", scale=2)
        widgets = {}
        for row in WIDGETS:
            with gr.Row():
                for key in row:
                    widgets[key] = field(keys[key], "new")
                    check_as_typed(keys[key], widgets[key])
        rest = [k for k in keys if k not in fields_of_page()]
        extra = gr.Textbox(label="more settings: key=value, one per line (any other key of python -m finetune, or "
                                 "a config group's option such as optim=demo)", lines=2, elem_id="new-extra",
                           info=f"{len(rest)} more keys; see `python -m finetune model=f5tts --help`")
        extra_check = gr.HTML(elem_id="new-extra-check")
    command = gr.Code(label="Equivalent command", language="shell", interactive=False, elem_id="new-command",
                      wrap_lines=True, lines=2, max_lines=10, elem_classes=["command"])
    launch_btn = gr.Button("Launch", variant="primary", elem_id="new-launch")
    result = gr.HTML(elem_id="new-result")
    with gr.Group(visible=False, elem_id="new-vocab") as vocab_box:
        gr.Markdown("The data uses symbols the model's vocab lacks (listed above). Choose how to go on:")
        with gr.Row():
            extend = gr.Button("Extend the vocab (vocab.extend=true: the text embedding grows)",
                               elem_id="new-vocab-extend")
            accept = gr.Button("Map them to the unknown token 0 (vocab.accept_unknown=true)",
                               elem_id="new-vocab-accept")

    named = {"model": model, "preset": preset, "data": data, "pretrained": pretrained, "pre_file": pre_file,
             "pre_run": pre_run, "name": name, "vocab": vocab, "vocoder": vocoder, "logger": logger,
             "adapter": adapter, "extra": extra}
    form = [named[n] for n in NAMES] + [widgets[k] for k in widget_keys()]
    order = NAMES + widget_keys()

    def as_dict(values) -> dict:
        return dict(zip(order, values))

    def show_command(*values):
        try:
            return commands.shell_line(form_args(ctx, as_dict(values))[0])
        except UserError as e:
            return f"# error: {e}"

    # always_last: led by app.load, gr.on defaults to "once", which drops the edits made while a compose is
    # pending and leaves the command of an older form on show
    gr.on([app.load, *(c.change for c in form)], show_command, form, command, queue=False, show_progress="hidden",
          trigger_mode="always_last")

    def check_extra(text):
        try:
            read_lines(text, "new", fields_of_page())
        except UserError as e:
            return message(f"⚠ {e}", "error")
        return ""

    extra.change(check_extra, extra, extra_check, queue=False, show_progress="hidden", trigger_mode="always_last")

    def placeholders(m, p, d):
        """What an empty field means for this model, preset and data: the composed config's value."""
        overrides = [f"model={m}"] + ([f"experiment={p}"] if p else []) + \
            [f"data={'demo' if d in (DEMO, None, '') else 'custom'}"]
        try:
            composed = commands.defaults(tuple(overrides))
        except UserError:
            return [gr.skip()] * (len(widgets) + len(GROUPS))
        out = [empty_label(keys[k], widgets[k], default_label(composed.get(k))) for k in widget_keys()]
        for g in GROUPS:
            current = {"vocoder": "vocoder.kind", "logger": "logger.kind", "adapter": "adapter.kind"}[g]
            out.append(gr.update(choices=[(default_label(composed.get(current)), ""), *commands.options(g)]))
        return out

    gr.on([app.load, model.change, preset.change, data.change], placeholders, [model, preset, data],
          [*(widgets[k] for k in widget_keys()), vocoder, logger, adapter], queue=False, show_progress="hidden",
          trigger_mode="always_last")

    def pick_data(d):
        if not d or d == DEMO:
            return "The two labelled clips f5-tts ships (a pipeline check, not a voice).", gr.update(visible=False)
        try:
            s, rep = datasets.summary(roots.confine(d, "data.path", base=roots.data, roots=(roots.data,)))
        except UserError as e:
            return f"error: {e}", gr.update(visible=False)
        return datasets.describe(s), gr.update(value=rep or "(no skipped rows)", visible=True)

    gr.on([app.load, data.change], pick_data, data, [summary, report], queue=False, trigger_mode="always_last")
    keep_fresh(data, lambda: [DEMO, *datasets.prepared(roots.data)], app.load, data.focus)
    pretrained.change(lambda p: (gr.update(visible=p == PRETRAINED[2]), gr.update(visible=p == PRETRAINED[3],
                                                                                 choices=ctx.run_names())),
                      pretrained, [pre_file, pre_run], queue=False)

    def start(*values):
        """Launch and follow the start until the run folder exists (then open its page) or the tool refuses."""
        hide = gr.update(visible=False)
        try:
            argv, run_dir = form_args(ctx, as_dict(values))
            job = launch.launch_finetune(roots.runs, run_dir, argv)
        except UserError as e:
            yield error(e, fields_of_page()), hide, gr.skip()
            return
        line = commands.shell_line(argv)
        waited = 0.0
        while True:
            kind, text = launch.settle_launch(job, run_dir)
            if kind == "refused":
                code = launch.error_code(text)
                vocab_refusal = code == "vocab" if code else ("vocab.extend=true" in text
                                                              and "vocab.accept_unknown=true" in text)
                yield error(text, fields_of_page()), gr.update(visible=vocab_refusal), gr.skip()
                return
            if kind == "started":
                yield (message(f"started run {run_dir.name} (pid {job.pid}), detached: closing this page or "
                               f"stopping the app does not stop it\n{line}", "ok"), hide,
                       gr.update(choices=ctx.run_names(), value=run_dir.name))
                return
            yield (message(f"starting (pid {job.pid}, {waited:.0f} s): importing, checking the data, the vocab and "
                           f"the weights before the run folder is made\n{line}"), hide, gr.skip())
            job.wait(0.5)
            waited += 0.5

    outputs = [result, vocab_box, run_pick]
    started = open_tab("run", "v[0].includes('msg ok')")  # the run's page, once its folder exists
    launch_btn.click(start, form, outputs, concurrency_limit=None).then(None, result, None, js=started)
    extend.click(lambda: "extend", None, vocab, queue=False).then(start, form, outputs, concurrency_limit=None
                                                                 ).then(None, result, None, js=started)
    accept.click(lambda: "accept_unknown", None, vocab, queue=False).then(start, form, outputs, concurrency_limit=None
                                                                         ).then(None, result, None, js=started)

    return form


def fill(ctx: Ctx, config: dict) -> list:
    """Values for the form's fields (NAMES + widget_keys() order) that compose a run's config again (its
    manifest's, amended), but for a new name: each key in its field, the rest as key=value lines."""
    args, _ = commands.reproduce_args(config)
    v = {n: "" for n in NAMES} | {k: "" for k in widget_keys()}
    v |= {"pretrained": PRETRAINED[0], "pre_file": "", "pre_run": None, "data": DEMO}
    lines = []
    for arg in args[args.index("finetune") + 1:]:
        key, _, text = arg.partition("=")
        value = parse_override(arg)[1] if key not in groups("new") else text
        if key == "model":
            v["model"] = text
        elif key == "experiment":
            v["preset"] = text
        elif key in ("data", "data.name", "data.kind", "run.root", "run.name"):
            continue
        elif key == "data.path":
            path = Path(str(value))
            roots = ctx.roots
            v["data"] = str(path.resolve().relative_to(roots.data)) if path.resolve().is_relative_to(roots.data) \
                else str(path)
        elif key == "pretrained":
            if value is None:
                v["pretrained"] = PRETRAINED[1]
            elif Path(str(value)).parent == ctx.roots.runs:
                v["pretrained"], v["pre_run"] = PRETRAINED[3], Path(str(value)).name
            else:
                v["pretrained"], v["pre_file"] = PRETRAINED[2], str(value)
        elif key in ("vocab.extend", "vocab.accept_unknown"):
            if value is True:
                v["vocab"] = key.split(".")[1]
        elif key in GROUPS or key in widget_keys():
            v[key] = show(value) if key in widget_keys() else text
        else:
            lines.append(arg)
    v["extra"] = "\n".join(lines)
    return [v[n] for n in NAMES + widget_keys()]
