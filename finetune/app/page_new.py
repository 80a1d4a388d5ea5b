"""New fine-tune: a form for model, data, pretrained weights and the main settings; shows the command, then
starts it detached. A vocab refusal offers its two ways on."""
from datetime import datetime
from pathlib import Path

import gradio as gr

from finetune.lock.errors import UserError

from . import commands, datasets, launch
from .widgets import Ctx, error, message

DEMO = "demo (the two clips f5-tts ships)"
PRETRAINED = ["model default", "none (from scratch)", "local file", "another run"]
# form field -> config key; empty fields are left to the config (the model's and groups' defaults)
SETTINGS = [("train.max_updates", "train.max_updates (empty: train.epochs)", int),
            ("train.save_every", "train.save_every", int), ("optim.lr", "optim.lr", float),
            ("optim.warmup_updates", "optim.warmup_updates", int),
            ("data.frames_per_batch", "data.frames_per_batch (or auto)", int),
            ("optim.grad_accumulation_steps", "optim.grad_accumulation_steps", int), ("train.seed", "train.seed", int)]
WORDS = {"data.frames_per_batch": ("auto",)}  # measured at start-up: the largest budget that fits the machine
VOCAB = {"": {}, "extend": {"vocab.extend": True}, "accept_unknown": {"vocab.accept_unknown": True}}


def form_args(ctx: Ctx, model, preset, data, pretrained, pre_file, pre_run, name, precision, log_samples, vocoder,
              logger, extra, vocab, *numbers) -> tuple[list[str], Path]:
    """The form as a `python -m finetune` argument list and the run folder it will write."""
    roots = ctx.roots
    if model not in commands.options("model"):
        raise UserError(f"model={model}: choose one of {', '.join(commands.options('model'))}", code="range")
    settings = {}
    if preset:
        settings["experiment"] = preset
    if data and data != DEMO:
        folder = roots.confine(data, "data.path", base=roots.data, roots=(roots.data,))
        datasets.summary(folder)  # not a prepared dataset: its one-line reason, before anything starts
        settings |= {"data": "custom", "data.path": str(folder)}
    elif data == DEMO:
        settings["data"] = "demo"
    else:
        raise UserError("choose a dataset (prepare one on the Data page) or the demo clips", code="app")
    if pretrained == PRETRAINED[1]:
        settings["pretrained"] = None  # null: from scratch
    elif pretrained == PRETRAINED[2]:
        settings["pretrained"] = str(roots.confine(pre_file, "pretrained"))
    elif pretrained == PRETRAINED[3]:
        settings["pretrained"] = str(roots.run_dir(pre_run))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = (name or "").strip() or f"{model}-{'demo' if data == DEMO else Path(str(data)).name}-{stamp}"
    run_dir = roots.run_dir(name, must_exist=False)
    settings |= {"run.root": str(roots.runs), "run.name": name}
    for (key, _, kind), value in zip(SETTINGS, numbers):
        text = str(value or "").strip()
        if text in WORDS.get(key, ()):
            settings[key] = text
        elif text:
            try:
                settings[key] = kind(text)
            except ValueError:
                words = "".join(f" or {w}" for w in WORDS.get(key, ()))
                raise UserError(f"{key}={value}: not {'a whole number' if kind is int else 'a number'}{words}", code="app")
    if precision:
        settings["train.mixed_precision"] = precision
    if log_samples:
        settings["train.log_samples"] = True
    if vocoder:
        settings["vocoder"] = vocoder
    if logger:
        settings["logger"] = logger
    settings |= VOCAB.get(vocab or "", {})
    return commands.finetune_args(model, settings, commands.check_extra(extra, roots.confine)), run_dir


def build(ctx: Ctx, app: gr.Blocks, tabs: gr.Tabs, run_pick: gr.Dropdown) -> None:
    roots = ctx.roots
    with gr.Row():
        model = gr.Dropdown(commands.options("model"), value="f5tts", label="Model (conf/model)", elem_id="new-model")
        presets = commands.options("experiment") if (commands.CONF_DIR / "experiment").is_dir() else []
        preset = gr.Dropdown(["", *presets], value="", label="Preset (conf/experiment; empty: none)",
                             elem_id="new-preset", visible=bool(presets))
        name = gr.Textbox(label="Run name (empty: <model>-<data>-<time>)", elem_id="new-name")
    with gr.Row():
        data = gr.Dropdown([DEMO, *datasets.prepared(roots.data)], value=DEMO, label=f"Dataset (under {roots.data})",
                           elem_id="new-data", scale=2)
        pretrained = gr.Radio(PRETRAINED, value=PRETRAINED[0], label="Start from", elem_id="new-pretrained", scale=2)
    with gr.Row():
        pre_file = gr.Textbox(label="pretrained file (.pt / .safetensors, under the runs or data root)",
                              elem_id="new-pretrained-file", visible=False)
        pre_run = gr.Dropdown(ctx.run_names(), label="pretrained run (its last checkpoint)",
                              elem_id="new-pretrained-run", visible=False)
    summary = gr.Markdown(elem_id="new-data-summary")
    report = gr.Textbox(label="Skipped rows (report.txt)", lines=3, max_lines=8, interactive=False,
                        elem_id="new-data-report", visible=False)
    with gr.Accordion("Training settings (empty: the config's default)", open=True):
        with gr.Row():
            # text fields, not gr.Number: an empty field means "the config's default", which a number field
            # cannot say (it sends 0)
            numbers = [gr.Textbox(label=label, placeholder="default", max_lines=1,
                                  elem_id="new-" + key.replace(".", "-").replace("_", "-")) for key, label, _ in SETTINGS]
        with gr.Row():
            precision = gr.Dropdown(["", "no", "bf16", "fp16"], value="", label="train.mixed_precision",
                                    elem_id="new-precision")
            log_samples = gr.Checkbox(False, label="train.log_samples (a wav at each checkpoint)", elem_id="new-samples")
            vocoder = gr.Dropdown(["", *commands.options("vocoder")], value="", label="vocoder", elem_id="new-vocoder")
            logger = gr.Dropdown(["", *commands.options("logger")], value="", label="logger", elem_id="new-logger")
        extra = gr.Textbox(label="more settings (key=value, one per line: train.*, optim.*, logger.*, vocab.*, "
                                 "vocoder.*, data.frames_per_batch, data.max_samples)", lines=2, elem_id="new-extra")
    vocab = gr.State("")
    command = gr.Code(label="Equivalent command", language="shell", interactive=False, elem_id="new-command")
    launch_btn = gr.Button("Launch", variant="primary", elem_id="new-launch")
    result = gr.HTML(elem_id="new-result")
    with gr.Group(visible=False, elem_id="new-vocab") as vocab_box:
        gr.Markdown("The data uses symbols the model's vocab lacks (listed above). Choose how to go on:")
        with gr.Row():
            extend = gr.Button("Extend the vocab (vocab.extend=true: the text embedding grows)",
                               elem_id="new-vocab-extend")
            accept = gr.Button("Map them to the unknown token 0 (vocab.accept_unknown=true)",
                               elem_id="new-vocab-accept")

    form = [model, preset, data, pretrained, pre_file, pre_run, name, precision, log_samples, vocoder, logger, extra,
            vocab, *numbers]

    def show_command(*values):
        try:
            return commands.shell_line(form_args(ctx, *values)[0])
        except UserError as e:
            return f"# error: {e}"

    # always_last: led by app.load, gr.on defaults to "once", which drops the edits made while a compose is
    # pending and leaves the command of an older form on show
    gr.on([app.load, *(c.change for c in form if not isinstance(c, gr.State))], show_command, form, command,
          queue=False, show_progress="hidden", trigger_mode="always_last")

    def pick_data(d):
        if not d or d == DEMO:
            return "The two labelled clips f5-tts ships (a pipeline check, not a voice).", gr.update(visible=False)
        try:
            s, rep = datasets.summary(roots.confine(d, "data.path", base=roots.data, roots=(roots.data,)))
        except UserError as e:
            return f"error: {e}", gr.update(visible=False)
        return datasets.describe(s), gr.update(value=rep or "(no skipped rows)", visible=True)

    gr.on([app.load, data.change], pick_data, data, [summary, report], queue=False, trigger_mode="always_last")
    app.load(lambda d: gr.update(choices=[DEMO, *datasets.prepared(roots.data)], value=d), data, data, queue=False)
    data.focus(lambda d: gr.update(choices=[DEMO, *datasets.prepared(roots.data)], value=d), data, data, queue=False)
    pretrained.change(lambda p: (gr.update(visible=p == PRETRAINED[2]), gr.update(visible=p == PRETRAINED[3],
                                                                                 choices=ctx.run_names())),
                      pretrained, [pre_file, pre_run], queue=False)

    def start(*values):
        """Launch and follow the start until the run folder exists (then open its page) or the tool refuses."""
        hide = gr.update(visible=False)
        try:
            argv, run_dir = form_args(ctx, *values)
            job = launch.launch_finetune(roots.runs, run_dir, argv)
        except UserError as e:
            yield error(e), hide, gr.skip(), gr.skip(), ""
            return
        line = commands.shell_line(argv)
        while True:
            kind, text = launch.settle_launch(job, run_dir)
            if kind == "refused":
                vocab_refusal = "vocab.extend=true" in text and "vocab.accept_unknown=true" in text
                yield error(text), gr.update(visible=vocab_refusal), gr.skip(), gr.skip(), ""
                return
            if kind == "started":
                yield (message(f"started run {run_dir.name} (pid {job.pid}), detached: closing this page or "
                               f"stopping the app does not stop it\n{line}", "ok"), hide,
                       gr.update(choices=ctx.run_names(), value=run_dir.name), gr.Tabs(selected="run"), "")
                return
            yield message(f"starting (pid {job.pid}): {line}\n{text}"), hide, gr.skip(), gr.skip(), gr.skip()
            job.wait(0.5)

    outputs = [result, vocab_box, run_pick, tabs, vocab]
    launch_btn.click(start, form, outputs, concurrency_limit=None)
    extend.click(lambda: "extend", None, vocab, queue=False).then(start, form, outputs, concurrency_limit=None)
    accept.click(lambda: "accept_unknown", None, vocab, queue=False).then(start, form, outputs,
                                                                          concurrency_limit=None)
