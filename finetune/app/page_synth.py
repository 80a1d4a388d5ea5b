"""Synthesize: one run, checkpoint and weight set through python -m infer; plays the wav and offers it."""
import secrets
from datetime import datetime
from pathlib import Path

import gradio as gr

from finetune.lock.errors import UserError

from . import commands, launch
from .widgets import Ctx, checkpoint_picker, error, message, resolve_checkpoint

VOCODERS = ["the run's own", "vocos", "griffinlim"]


def synth_args(ctx: Ctx, run, ckpt, weights, text, ref, ref_text, seed, nfe, speed, vocoder) -> tuple[list[str], Path]:
    """The `python -m infer` argument list for one synthesis, and the wav it will write (in the run's samples/,
    where infer writes by default; named so that two syntheses never share a file)."""
    roots = ctx.roots
    run_dir = roots.run_dir(run)
    update = resolve_checkpoint(run_dir, ckpt)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = run_dir / "samples" / f"{stamp}-model_{update:08d}-{weights}-seed{int(seed)}-{secrets.token_hex(2)}.wav"
    settings = {"run": str(run_dir), "ckpt": str(update), "weights": weights, "gen_text": text or None,
                "seed": int(seed), "nfe_step": int(nfe), "speed": float(speed), "out": str(out),
                "vocoder": vocoder if vocoder in VOCODERS[1:] else None}
    if ref:
        settings["ref_audio"] = str(roots.confine(ref, "ref_audio", roots=(roots.uploads, roots.data, roots.runs)))
        if not (ref_text or "").strip():
            raise UserError("the reference audio needs its transcript (ref_text): what is said in it", code="app")
        settings["ref_text"] = ref_text
    return commands.infer_args(settings), out


def voice_inputs(prefix: str):
    """Text, optional reference clip with its transcript, seed, NFE steps, speed and vocoder."""
    text = gr.Textbox(label="Text to speak (empty: the default sentence)", lines=2, elem_id=f"{prefix}-text")
    with gr.Row():
        ref = gr.Audio(sources=["upload"], type="filepath", label="Reference audio (optional; default: the run's "
                       "reference clip)", elem_id=f"{prefix}-ref")
        ref_text = gr.Textbox(label="What the reference says", lines=2, elem_id=f"{prefix}-ref-text")
    with gr.Row():
        seed = gr.Number(0, label="seed", precision=0, elem_id=f"{prefix}-seed")
        nfe = gr.Slider(1, 64, value=32, step=1, label="NFE steps", elem_id=f"{prefix}-nfe")
        speed = gr.Slider(0.3, 2.0, value=1.0, step=0.05, label="speed", elem_id=f"{prefix}-speed")
        vocoder = gr.Dropdown(VOCODERS, value=VOCODERS[0], label="vocoder", elem_id=f"{prefix}-vocoder")
    return [text, ref, ref_text, seed, nfe, speed, vocoder]


def build(ctx: Ctx, app: gr.Blocks) -> None:
    run, ckpt, weights = checkpoint_picker(ctx, app, "syn")
    voice = voice_inputs("syn")
    go = gr.Button("Synthesize", variant="primary", elem_id="syn-go")
    result = gr.HTML(elem_id="syn-msg")
    out = gr.Audio(label="Result", interactive=False, elem_id="syn-out")
    command = gr.Code(label="Command", language="shell", interactive=False, elem_id="syn-command")

    def synthesize(*values):
        try:
            argv, _ = synth_args(ctx, *values)
        except UserError as e:
            return error(e), None, ""
        line = commands.shell_line(argv)
        try:
            wav = launch.infer_here(argv)
        except UserError as e:
            return error(e), None, line
        return message(f"wrote {wav}", "ok"), str(wav), line

    go.click(synthesize, [run, ckpt, weights, *voice], [result, out, command])
