"""Argument lists for the command-line tools, and the command line that reproduces a run.

User text is always one argument, and quoted for the parser that reads it (each tool's parser, not a
shell: no shell ever runs): Hydra's override grammar for `python -m finetune` (start and resume) and
`finetune.prepare`; `python -m infer` takes the text after `=` as it is."""
import json
import re
import shlex
import sys
import threading
from functools import lru_cache
from pathlib import Path

from finetune.config import CONF_DIR, CONFIG_ERRORS
from finetune.lock.errors import UserError, first_line
from finetune.lock.schema import flatten

# -P: the working folder is not put first on sys.path, so a file or folder there named like a module the
# tools import (`yaml/` under data_root, where prepare and score run) is never imported, let alone run
PYTHON = [sys.executable, "-P", "-m"]


# ---- quoting for each tool's parser ------------------------------------------------------------------

def _hydra_parses(text: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(f"k={text}").value()


def hydra_value(value) -> str:
    """A value as Hydra's override grammar reads it back unchanged: bare when it can be, else quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{hydra_value(str(k))}: {hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    try:
        if re.fullmatch(r"[\w./:@+-]+", text) and _hydra_parses(text) == text:
            return text
    except CONFIG_ERRORS:  # not a bare value in the grammar: quote it
        pass
    # inside quotes, a backslash escapes only the quote after it, so backslashes before a quote or at the
    # end are doubled (Hydra's escaping rules since 1.1); double quotes unless the text holds one
    q = "'" if '"' in text else '"'
    body = re.sub(rf"(\\*){q}", lambda m: m[1] * 2 + "\\" + q, text)
    quoted = q + re.sub(r"(\\+)$", lambda m: m[1] * 2, body) + q
    try:
        back = _hydra_parses(quoted)
    except CONFIG_ERRORS as e:
        raise UserError(f"{text!r}: cannot be passed as one Hydra value ({first_line(e)})", code="app")
    if back != text:
        raise UserError(f"{text!r}: cannot be passed as one Hydra value unchanged (it reads back as {back!r})", code="app")
    return quoted


def text_value(value) -> str:
    """A value as `python -m infer` reads it: the text after `=` as it is (its parser converts by each key's
    type and never reads quotes or YAML), booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def shell_line(argv: list[str]) -> str:
    """How a person would type the argument list in a shell (for display only: nothing runs a shell)."""
    args = list(argv)
    if args[:len(PYTHON)] == PYTHON:
        args = ["python", "-m", *args[len(PYTHON):]]
    return " ".join(shlex.quote(a) for a in args)


# ---- the tools ---------------------------------------------------------------------------------------

def _arg(key: str, value) -> str:
    """key=value for python -m finetune: a config group's option bare (it names a file), any other value as
    Hydra reads it back unchanged."""
    from .settings import groups

    return f"{key}={value}" if key in groups("new") else f"{key}={hydra_value(value)}"


def finetune_args(model: str, settings: dict, extra: list[str] = ()) -> list[str]:
    """python -m finetune model=<model> key=value ... (settings: dotted key or group -> value; None is null)."""
    return [*PYTHON, "finetune", f"model={hydra_value(model)}", *(_arg(k, v) for k, v in settings.items()), *extra]


def resume_args(run_dir: Path, amendments: dict, extra: list[str] = ()) -> list[str]:
    """python -m finetune resume=<run> key=value ... (resume reads its overrides with Hydra's grammar;
    None values are left out: the run keeps its setting)."""
    args = [_arg(k, v) for k, v in amendments.items() if v is not None]
    return [*PYTHON, "finetune", f"resume={run_dir}", *args, *extra]


def infer_args(settings: dict) -> list[str]:
    """python -m infer key=value ... (None values are left out: the tool's default applies)."""
    return [*PYTHON, "infer", *(f"{k}={text_value(v)}" for k, v in settings.items() if v is not None)]


def export_args(settings: dict) -> list[str]:
    return [*PYTHON, "infer", "export", *(f"{k}={text_value(v)}" for k, v in settings.items() if v is not None)]


def score_args(settings: dict) -> list[str]:
    return [*PYTHON, "infer.score", *(f"{k}={text_value(v)}" for k, v in settings.items() if v is not None)]


def prepare_args(settings: dict) -> list[str]:
    return [*PYTHON, "finetune.prepare",
            *(f"{k}={hydra_value(v)}" for k, v in settings.items() if v is not None)]


def options(group: str) -> list[str]:
    """The choices of a config group (conf/<group>/*.yaml)."""
    from .settings import options as group_options

    return group_options(group)


# keys whose value is a path the app confines to its roots (the form's own fields confine theirs: data.path,
# pretrained, run.root); tests/test_app.py fails when the schema gains a text key this does not classify
PATH_KEYS = ("vocoder.path", "model.vocab")


def extra_args(pairs: list[tuple[str, object]], confine) -> list[str]:
    """Checked (key, value) pairs (settings.read_lines) as arguments, each path confined to the roots."""
    out = []
    for key, value in pairs:
        if key in PATH_KEYS and value is not None:
            value = str(confine(value, key))
        out.append(_arg(key, value))
    return out


# ---- reproduce a run --------------------------------------------------------------------------------

_HYDRA = threading.Lock()  # Hydra's global state is not thread-safe, and the app's handlers run in threads
IGNORED = ("run.name",)  # a new run gets a new name: its folder must not exist


@lru_cache(maxsize=256)
def _compose(overrides: tuple[str, ...]) -> dict:
    """The flat config `python -m finetune <overrides>` composes; a value it lacks (data=custom's data.path)
    stays "???" instead of failing, so that it shows as a key to set. Cached: the config files are read once
    per app (the reproduce command of every run of one model asks the same composes, ~0.1 s each). The dict
    is shared: read it, never change it."""
    from omegaconf import OmegaConf

    from finetune.config import compose_config
    from finetune.lock.schema import FinetuneConfig

    with _HYDRA:
        cfg = compose_config("finetune", list(overrides))
    merged = OmegaConf.merge(OmegaConf.structured(FinetuneConfig), OmegaConf.to_container(cfg))
    flat = flatten(OmegaConf.to_container(merged, resolve=True, throw_on_missing=False, enum_to_str=True))
    return {k: v for k, v in flat.items() if k not in IGNORED}


def _differ(target: dict, got: dict, prefix: str = "") -> list[str]:
    return [k for k in target if k.startswith(prefix) and k not in IGNORED and target[k] != got.get(k)]


@lru_cache(maxsize=64)
def _reproduce(config_json: str) -> tuple[tuple[str, ...], str | None]:
    config = json.loads(config_json)
    target = {k: v for k, v in flatten(config).items() if k not in IGNORED}
    model = f"model={config['model']['name']}"
    from .settings import groups as config_groups

    groups = [g for g in config_groups("new") if g not in ("model", "experiment")]
    # the option of each group closest to the run's section (fewest keys left to set by hand)
    best = {}
    for g in groups:
        scored = [(len(_differ(target, _compose((model, f"{g}={o}")), g + ".")), o) for o in options(g)]
        best[g] = min(scored)[1] if scored else None
    candidates = [()] + [(f"experiment={e}",) for e in options("experiment")] if (CONF_DIR / "experiment").is_dir() \
        else [()]
    found = None
    for base in candidates:
        baseline = _compose((model, *base))
        picks = tuple(f"{g}={best[g]}" for g in groups if best[g] and _differ(target, baseline, g + ".")
                      and len(_differ(target, _compose((model, *base, f"{g}={best[g]}")), g + "."))
                      < len(_differ(target, baseline, g + ".")))
        got = _compose((model, *base, *picks)) if picks else baseline
        keys = tuple(f"{k}={hydra_value(target[k])}" for k in _differ(target, got))
        args = (model, *base, *picks, *keys)
        if found is None or len(args) < len(found):
            found = args
    left = _differ(target, _compose(found))  # the proof: composing the command gives the run's config
    return found, (f"the config files changed since this run: {', '.join(left)} would differ" if left else None)


def reproduce_args(config: dict) -> tuple[list[str], str | None]:
    """The `python -m finetune` argument list that composes a run's config again (its manifest's `config`
    section): model=<name>, the config-group options closest to the run, then each key still differing.
    Returns the list and a warning when today's config files cannot give that config back."""
    args, warning = _reproduce(json.dumps(config, sort_keys=True))
    return [*PYTHON, "finetune", *args], warning


def defaults(overrides: tuple[str, ...]) -> dict:
    """The flat config `python -m finetune <overrides>` composes: what each empty field of a form means."""
    return _compose(overrides)
