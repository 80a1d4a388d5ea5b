"""What each form may set, derived from the config schemas (the same source the command lines obey): every
settable dotted key with its type, default, kind, bounds and choices, for a purpose, and a typed value checked
against it. Free of Gradio: a command line's help can list the same.

Purposes: `new` (python -m finetune model=...: every key), `resume` (python -m finetune resume=...: the keys a
resume may amend, training and runtime), `prepare` (python -m finetune.prepare: every key but the model's, whose
mel settings come with model=)."""
import math
import typing
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from finetune.config import CONF_DIR, parse_override
from finetune.lock.errors import UserError
from finetune.lock.schema import RUNTIME, TRAINING, FinetuneConfig, kind_of, options as schema_options, problems
from finetune.prepare_schema import PrepareConfig

UNSET = object()  # an empty field: the config's value stays


@dataclass(frozen=True)
class Setting:
    key: str  # dotted, as on the command line
    type: Any  # int, float, bool, str, an Enum, list[...], dict[...] or Any
    optional: bool  # null is a value
    default: Any  # the schema's (a config group may set another)
    kind: str | None  # model, runtime, training or fixed (None: a schema without kinds)
    bounds: tuple  # ((name, bound), ...): ge, gt, le, lt, ne, nonempty
    words: tuple  # words a number field also takes ("auto")
    section: type  # the dataclass holding the field, and its name there: what problems() checks it against
    name: str

    @property
    def choices(self) -> tuple[str, ...]:
        if isinstance(self.type, type) and issubclass(self.type, Enum):
            return tuple(e.value for e in self.type)
        return ("true", "false") if self.type is bool else ()

    @property
    def numeric(self) -> bool:
        return self.type in (int, float)

    def describe(self) -> str:
        """What the key takes, in a few words: `number > 0`, `whole number >= -1, not 0, or auto`."""
        names = {int: "whole number", float: "number", bool: "true or false", str: "text"}
        origin = typing.get_origin(self.type)
        what = (f"one of {', '.join(self.choices)}" if self.choices and self.type is not bool else
                "a list, [a, b]" if origin is list else "a mapping, {a: b}" if origin is dict else
                names.get(self.type, "a value"))
        signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "ne": "not"}
        limits = [f"{signs[n]} {_num(b)}" for n, b in self.bounds if n in signs]
        text = " ".join([what, ", ".join(limits)]).strip()
        if dict(self.bounds).get("nonempty"):
            text += ", not empty"
        text += "".join(f", or {w}" for w in self.words) + (", or null" if self.optional else "")
        return text

    def parse(self, text) -> Any:
        """A field's text as the value the tool receives: UNSET when empty; `null` for an optional key; text
        for a text key (as typed); anything else read with Hydra's grammar, as the command line reads it."""
        raw = "" if text is None else str(text).strip()
        if raw == "":
            return UNSET
        if raw == "null" and self.optional:
            return None
        if self.type is str:
            return str(text)
        if self.type is bool and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        return parse_override(f"{self.key}={raw}")[1]

    def problem(self, value) -> str | None:
        """Why the schema refuses `value` for this key, in the command line's words; None when it takes it."""
        if value is UNSET:
            return None
        if self.type is float and isinstance(value, float) and not math.isfinite(value):
            return f"{self.key}={value}: must be a finite number"
        found = [p for p in problems({self.name: value}, self.section) if p.startswith((f"{self.name}=", f"{self.name}:"))]
        return f"{self.key}{found[0][len(self.name):]}" if found else None

    def check(self, text) -> Any:
        """parse() then problem(): the value, or a UserError naming the key."""
        value = self.parse(text)
        error = self.problem(value)
        if error:
            raise UserError(error, code="range")
        return value


def _num(b) -> str:
    return f"{b:g}" if isinstance(b, float) else str(b)


def leaves(schema, kinds: bool = True) -> list[Setting]:
    """Every key of a schema, sections walked, in the schema's order: the schema's one list of options."""
    return [Setting(o["key"], int if o["words"] and o["value_type"] is Any else o["value_type"],  # words: a number
                    o["optional"], o["default"], o["kind"] if kinds else None, tuple(o["bounds"].items()), o["words"],
                    o["schema"], o["name"]) for o in schema_options(schema)]


def settable(purpose: str) -> dict[str, Setting]:
    """Every key a purpose takes, by dotted name."""
    if purpose == "new":
        chosen = leaves(FinetuneConfig)
    elif purpose == "resume":
        chosen = [s for s in leaves(FinetuneConfig) if s.kind in (TRAINING, RUNTIME)]
    elif purpose == "prepare":
        chosen = [s for s in leaves(PrepareConfig, kinds=False) if not s.key.startswith("model.")]
    else:
        raise ValueError(purpose)
    return {s.key: s for s in chosen}


def options(group: str) -> list[str]:
    """The choices of a config group (conf/<group>/*.yaml)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def groups(purpose: str) -> list[str]:
    """The config groups (key=option) a purpose takes: a new run every one; a resume those whose section it may
    amend (train, optim, logger: the trainer refuses only what an option would change of a fixed key)."""
    # the project's groups; conf/hydra/ holds presets of Hydra's own groups (hydra/launcher=...), no run setting
    found = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
    if purpose == "new":
        return found
    if purpose == "resume":
        return [g for g in found if g in {f.name for f in fields(FinetuneConfig)} and kind_of(g) in (TRAINING, RUNTIME)]
    return []


def read_lines(text: str, purpose: str, owned: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    """key=value lines typed in a form: [(key, value)], each key one the purpose takes (a group: one of its
    options) and each value checked against the schema. `owned`: keys a field of the page sets, refused here
    with that field's name."""
    keys, known_groups, owned = settable(purpose), groups(purpose), owned or {}
    out = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UserError(f"{line}: expected key=value, one per line", code="usage")
        if key in owned:
            raise UserError(f"{line}: {key} is set by the field {owned[key]!r} of this page", code="app")
        if key in known_groups:
            if value.strip() not in options(key):
                raise UserError(f"{line}: no option {value.strip()!r} in conf/{key}/ (choose {', '.join(options(key))})", code="app")
            out.append((key, value.strip()))
            continue
        if key not in keys:
            raise UserError(f"{line}: {key} is not a key {PURPOSE_WORDS[purpose]} takes"
                            + (f"; it takes {_summary(purpose)}" if purpose == "resume" else ""), code="config")
        value = keys[key].check(value)
        if value is not UNSET:
            out.append((key, value))
    return out


PURPOSE_WORDS = {"new": "a new run", "resume": "a resume", "prepare": "preparation"}


def _summary(purpose: str) -> str:
    """The keys a purpose takes, shortly: `train.*, optim.* but optim.name, ...`."""
    taken = set(settable(purpose))
    every = [s.key for s in leaves(FinetuneConfig)]

    def under(prefix):
        return [k for k in every if k.startswith(prefix)]

    def walk(prefix):
        inside = under(prefix)
        got = [k for k in inside if k in taken]
        if not got:
            return []
        if len(got) == len(inside):
            return [prefix + "*"]
        if prefix and len(got) * 2 > len(inside):
            return [f"{prefix}* but {', '.join(k for k in inside if k not in taken)}"]
        parts, seen = [], set()
        for k in inside:
            rest = k[len(prefix):]
            if "." in rest:
                sub = prefix + rest.split(".")[0] + "."
                if sub not in seen:
                    seen.add(sub)
                    parts += walk(sub)
            elif k in taken:
                parts.append(k)
        return parts

    return "; ".join(walk(""))
