"""Form fields made from the schema's settings (settings.py): a dropdown for a key with choices, a text field for
the rest (empty: the config's value stays, which a number field cannot say), each checked as it is typed, its
error shown at the field before anything runs."""
import gradio as gr

from finetune.lock.errors import UserError

from .settings import Setting


def elem_id(prefix: str, key: str) -> str:
    return f"{prefix}-" + key.replace(".", "-").replace("_", "-")


def default_label(value) -> str:
    return "default" if value in (None, "", "???") else f"default: {show(value)}"


def show(value) -> str:
    """A value as a person types it on a command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def field(s: Setting, prefix: str, empty: str = "default", scale: int = 1) -> gr.components.Component:
    """One field for a setting; its label is the key, its info what the key takes."""
    if s.choices:
        return gr.Dropdown([(empty, ""), *s.choices], value="", label=s.key, info=s.describe(),
                           elem_id=elem_id(prefix, s.key), scale=scale, min_width=150)
    return gr.Textbox(label=s.key, placeholder=empty, info=s.describe(), max_lines=1, elem_id=elem_id(prefix, s.key),
                      scale=scale, min_width=150)


def empty_label(s: Setting, comp, text: str):
    """The update that says what an empty field means (the config's value, or the run's)."""
    if s.choices:
        return gr.update(choices=[(text, ""), *s.choices])
    return gr.update(placeholder=text)


def verdict(s: Setting, text) -> str | None:
    try:
        s.check(text)
    except UserError as e:
        return str(e)
    return None


def check_as_typed(s: Setting, comp) -> None:
    """The field's info turns into the schema's refusal while its value is one the key does not take."""
    def check(text):
        problem = verdict(s, text)
        if problem:
            return gr.update(info=f"⚠ {problem}", elem_classes=["invalid"])
        return gr.update(info=s.describe(), elem_classes=[])

    comp.change(check, comp, comp, queue=False, show_progress="hidden", trigger_mode="always_last")


def values(settings: list[Setting], texts) -> list[tuple[str, object]]:
    """[(key, value)] of the filled fields, each checked (the first refusal raised, naming its key)."""
    from .settings import UNSET

    out = []
    for s, text in zip(settings, texts):
        value = s.check(text)
        if value is not UNSET:
            out.append((s.key, value))
    return out
