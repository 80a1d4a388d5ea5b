"""The layering, read from the source's imports (the AST), so that it holds tomorrow too:
- finetune/lock/ (the lock) imports nothing else of this project: both sides stand on it;
- infer/ imports only the lock and its own modules, never the trainer side of finetune/;
- no import cycle among the project's modules, lazy (function-level) imports included."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("finetune", "infer")


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
        found |= {t for t in targets if t.split(".")[0] in PACKAGES and t in MODULES}
    return found - {name}


MODULES = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def test_the_lock_imports_nothing_else_of_the_project():
    for name, deps in GRAPH.items():
        if name.startswith("finetune.lock"):
            outside = {d for d in deps if not d.startswith("finetune.lock") and d != "finetune"}
            assert not outside, f"{name} imports {sorted(outside)}"


def test_inference_imports_only_the_lock_and_itself():
    for name, deps in GRAPH.items():
        if name.startswith("infer"):
            trainer_side = {d for d in deps if d.startswith("finetune") and not d.startswith("finetune.lock")
                            and d != "finetune"}
            assert not trainer_side, f"{name} imports {sorted(trainer_side)}"


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
