"""Synthesize: one run, checkpoint and weight set through python -m infer; plays the wav and offers it. The
reference is the run's clip, an uploaded or recorded one, or a random clip of the run's dataset; a reference
without its text is transcribed first; seed -1 draws a seed, which the message names."""
import secrets
from datetime import datetime
from pathlib import Path

import gradio as gr

from finetune.lock.errors import UserError
from finetune.prepare_schema import AsrConfig

from . import commands, launch, runs, voice
from .widgets import Ctx, checkpoint_picker, error, message, resolve_checkpoint

VOCODERS = ["the run's own", "vocos", "griffinlim"]
# refusals name infer's keys: the fields of the form that set them
FIELDS = {"ref_text": "What the reference says", "ref_audio": "Reference audio", "gen_text": "Text to speak",
          "seed": "seed", "nfe_step": "NFE steps", "speed": "speed", "vocoder": "vocoder",
          "asr.model": "recogniser for a reference without text", "ckpt": "Checkpoint", "weights": "Weights",
          "accept_unknown": "Text to speak (symbols the run's vocab lacks: change the text)"}


def synth_args(ctx: Ctx, run, ckpt, weights, text, ref, ref_text, seed, nfe, speed, vocoder) -> tuple[list[str], Path]:
    """The `python -m infer` argument list for one synthesis (seed already drawn: a whole number), and the wav it
    will write (in the run's samples/, where infer writes by default; named so that two syntheses never share a
    file)."""
    roots = ctx.roots
    run_dir = roots.run_dir(run)
    update = resolve_checkpoint(run_dir, ckpt, weights)
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
    """Text, optional reference clip with its transcript, seed, NFE steps, speed and vocoder (the arguments of
    synth_args after the checkpoint), and the extras: remove silence, the recogniser for a reference without
    text, and the button that picks a random reference clip."""
    text = gr.Textbox(label="Text to speak (empty: the default sentence)", lines=2, elem_id=f"{prefix}-text")
    with gr.Row():
        ref = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Reference audio (optional; "
                       "upload or record; default: the run's reference clip)", elem_id=f"{prefix}-ref", scale=2)
        with gr.Column(scale=2):
            ref_text = gr.Textbox(label="What the reference says (empty: the recogniser below writes it)", lines=2,
                                  elem_id=f"{prefix}-ref-text")
            with gr.Row():
                asr = gr.Textbox(label="recogniser for a reference without text (asr.model: a Whisper folder "
                                       "under data_root or a hub id)", value=AsrConfig.model, elem_id=f"{prefix}-asr",
                                 scale=3)
                pick = gr.Button("Random clip of the run's dataset", elem_id=f"{prefix}-random-ref", scale=1)
    with gr.Row():
        seed = gr.Number(-1, label="seed (-1: a random one, named in the message)", precision=0,
                         elem_id=f"{prefix}-seed")
        nfe = gr.Slider(1, 64, value=32, step=1, label="NFE steps", elem_id=f"{prefix}-nfe")
        speed = gr.Slider(0.3, 2.0, value=1.0, step=0.05, label="speed", elem_id=f"{prefix}-speed")
        vocoder = gr.Dropdown(VOCODERS, value=VOCODERS[0], label="vocoder", elem_id=f"{prefix}-vocoder")
        silence = gr.Checkbox(False, label="remove silence (pauses over 1 s cut to 0.5 s)", elem_id=f"{prefix}-silence")
    return [text, ref, ref_text, seed, nfe, speed, vocoder], {"silence": silence, "asr": asr, "random": pick}


def settle_voice(ctx: Ctx, values: list, recogniser) -> tuple[list, list[str]]:
    """The voice inputs made ready for synth_args: the seed drawn when -1, the reference's text transcribed when
    empty. Returns them and what to say about it."""
    text, ref, ref_text, seed, nfe, speed, vocoder = values
    notes = []
    used = voice.seed(seed)
    if used != seed:
        notes.append(f"seed {used} (drawn for -1)")
    if ref and not (ref_text or "").strip():
        model = ctx.roots.model(recogniser, "asr.model")
        if not model:
            raise UserError("the reference audio needs its transcript: type it, or name a recogniser (asr.model)", code="app")
        ref_text = voice.transcribe(ctx.roots.confine(ref, "ref_audio", roots=(ctx.roots.uploads, ctx.roots.data,
                                                                                  ctx.roots.runs)), model)
        notes.append(f"the reference says (as {model} heard it): {ref_text}")
    return [text, ref, ref_text, used, nfe, speed, vocoder], notes


def random_reference(ctx: Ctx, run):
    """A random clip of the run's dataset, for the reference audio and its text."""
    try:
        run_dir = ctx.roots.run_dir(run)
        m, problem = runs.manifest(run_dir)
        if m is None:
            raise UserError(problem, code="app")
        audio, text = voice.random_clip(run_dir, m)
        # the clips of a metadata file may lie anywhere: only those under the roots are played and used
        audio = ctx.roots.confine(str(audio), "ref_audio", roots=(ctx.roots.data, ctx.roots.runs, ctx.roots.uploads))
    except UserError as e:
        return gr.skip(), gr.skip(), error(e)
    return str(audio), text, message(f"reference: {Path(audio).name}: {text}")


def build(ctx: Ctx, app: gr.Blocks) -> None:
    run, ckpt, weights = checkpoint_picker(ctx, app, "syn")
    voice_values, extras = voice_inputs("syn")
    go = gr.Button("Synthesize", variant="primary", elem_id="syn-go")
    result = gr.HTML(elem_id="syn-msg")
    out = gr.Audio(label="Result", interactive=False, elem_id="syn-out")
    command = gr.Code(label="Command", language="shell", interactive=False, elem_id="syn-command", wrap_lines=True,
                      lines=2, max_lines=10, elem_classes=["command"])

    def synthesize(r, c, w, *values):
        *values, silence, recogniser = values
        try:
            values, notes = settle_voice(ctx, list(values), recogniser)
            argv, _ = synth_args(ctx, r, c, w, *values)
        except UserError as e:
            return error(e, FIELDS), None, "", gr.skip()
        line = commands.shell_line(argv)
        try:
            wav = launch.infer_here(argv)
            if silence:
                wav = voice.remove_silence(wav)
        except UserError as e:
            return error(e, FIELDS), None, line, values[2]
        return message("\n".join([f"wrote {wav}", *notes]), "ok"), str(wav), line, values[2]

    go.click(synthesize, [run, ckpt, weights, *voice_values, extras["silence"], extras["asr"]],
             [result, out, command, voice_values[2]])
    extras["random"].click(lambda r: random_reference(ctx, r), run, [voice_values[1], voice_values[2], result])
