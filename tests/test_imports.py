"""The layering, read from the source's imports (the AST), so that it holds tomorrow too:
- finetune/lock/ (the lock) imports nothing else of this project: both sides stand on it;
- finetune/media/ (audio, vocoder, recognisers, datasets, scores: shared, not the lock) imports only the lock;
- infer/ imports the lock, media and itself, never the trainer side of finetune/ nor the app;
- the trainer and data preparation (the rest of finetune/) import the lock, media and themselves, never infer/;
- nothing outside the app imports the app; bench/ never imports tests/;
- no import cycle among the project's modules, lazy (function-level) imports included."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("finetune", "infer", "bench", "tests")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every project module this file imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` may name a submodule: count it when one exists
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        # pytest puts tests/ on sys.path, so `import app_browser` there is tests.app_browser (and from bench/
        # it only works under pytest)
        targets = [f"tests.{t}" if t.split(".")[0] in BARE_TESTS else t for t in targets]
        found |= {t for t in targets if t.split(".")[0] in PACKAGES and t in MODULES}
    return found - {name}


MODULES = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
BARE_TESTS = {p.stem for p in (REPO / "tests").glob("*.py")}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def layer(name: str) -> str:
    for prefix in ("finetune.lock", "finetune.media", "finetune.app", "infer", "bench", "tests"):
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return "trainer"  # finetune and its other modules: the trainer and data preparation


ALLOWED = {  # what each layer may import (besides the package `finetune` itself, an empty __init__)
    "finetune.lock": {"finetune.lock"},
    "finetune.media": {"finetune.lock", "finetune.media"},
    "infer": {"finetune.lock", "finetune.media", "infer"},
    "trainer": {"finetune.lock", "finetune.media", "trainer"},
}


@pytest.mark.parametrize("upper", sorted(ALLOWED))
def test_each_layer_imports_only_what_is_under_it(upper):
    for name, deps in GRAPH.items():
        if layer(name) == upper:
            outside = {d for d in deps if layer(d) not in ALLOWED[upper] and d != "finetune"}
            assert not outside, f"{name} imports {sorted(outside)}"


def test_nothing_but_tests_imports_the_app_and_bench_never_imports_tests():
    for name, deps in GRAPH.items():
        if layer(name) not in ("finetune.app", "tests"):
            assert not {d for d in deps if layer(d) == "finetune.app"}, f"{name} imports the app"
        if layer(name) == "bench":
            assert not {d for d in deps if layer(d) == "tests"}, f"{name} imports tests"


def test_no_import_cycles():
    state = {}  # name -> "open" while on the current path, "done" after

    def visit(name, path):
        state[name] = "open"
        for dep in sorted(GRAPH.get(name, ())):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path + [name, dep]))
            if dep not in state:
                visit(dep, path + [name])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])


def test_the_rules_see_real_imports():
    """The checks above would pass vacuously if the parser saw nothing: it must see known edges."""
    assert "finetune.lock.manifest" in GRAPH["finetune.lock.load"]
    assert "finetune.lock.load" in GRAPH["infer.synth"]
    assert "finetune.lock.builder" in GRAPH["finetune.runs"]
    assert "finetune.media.audio" in GRAPH["infer.synth"] and "finetune.lock.builder" in GRAPH["bench.makers"]
    assert layer("finetune.runs") == "trainer" and layer("finetune.media.asr") == "finetune.media"
