"""What the installed upstream f5-tts is: its release, the release this f5tune is tested with, the releases
whose training is broken, and the arguments (with defaults) its constructors and CFM.sample take."""
import ast
import functools
import importlib.util
import inspect
from pathlib import Path

from .errors import UserError


@functools.cache
def upstream_args(cls) -> dict:
    """The keyword arguments `cls.__init__` takes in the installed f5-tts, with their defaults
    (inspect.Parameter.empty for a required one)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def upstream_version() -> str:
    from importlib.metadata import version

    return version("f5-tts")


def pinned_upstream() -> str:
    """The f5-tts release this f5tune is tested with: the pin in its own package requirements."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        pins = [r.split("==", 1)[1].split(";")[0].strip() for r in requires("f5tune") or [] if r.startswith("f5-tts==")]
    except PackageNotFoundError:
        pins = []
    return pins[0] if pins else "the release pyproject.toml pins"


# releases of f5-tts whose training is known to be broken, and why (inference from them is fine)
BROKEN_TRAINING = {"1.1.19": "its EMA copy fails at the first update (fixed in 1.1.20)"}


def check_trainable() -> None:
    """Refuse to train with an installed f5-tts whose training is known to be broken."""
    installed = upstream_version()
    if installed in BROKEN_TRAINING:
        raise UserError(f"f5-tts {installed} is installed, and {BROKEN_TRAINING[installed]}: "
                        f"pip install f5-tts=={pinned_upstream()}", code="upstream")


@functools.cache
def upstream_default(name: str):
    """The default of a keyword argument of the installed upstream `CFM.sample`, read from its source
    (importing f5_tts.model costs seconds that every command line would pay for its config's defaults)."""
    spec = importlib.util.find_spec("f5_tts.model")
    source = Path(next(iter(spec.submodule_search_locations))) / "cfm.py"
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef) and node.name == "sample":
            args = node.args
            named = args.posonlyargs + args.args
            defaults = dict(zip([a.arg for a in named][len(named) - len(args.defaults):], args.defaults))
            defaults |= {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None}
            found = defaults.get(name)
            if found is not None:
                return ast.literal_eval(found)
    raise RuntimeError(f"{source}: CFM.sample has no default for {name}; the installed f5-tts is not one this "
                       "tool supports")


