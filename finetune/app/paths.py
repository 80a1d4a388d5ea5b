"""The folders the app may touch, and the one check every typed or uploaded path goes through."""
import os
import re
from dataclasses import dataclass
from pathlib import Path

from finetune.lock.errors import UserError


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class Roots:
    runs: Path  # run folders: read, and written only by the tools the app starts
    data: Path  # inputs to prepare and prepared datasets
    uploads: Path  # where the browser's uploads land (Gradio's upload folder)

    @classmethod
    def make(cls, runs, data, uploads) -> "Roots":
        # resolved once: every check compares real paths, symlinks followed
        return cls(Path(runs).expanduser().resolve(), Path(data).expanduser().resolve(),
                   Path(uploads).expanduser().resolve())

    def confine(self, text, what: str, base: Path | None = None, roots: tuple[Path, ...] | None = None) -> Path:
        """A typed or uploaded path, resolved (`..` and symlinks followed to the real file) and refused
        unless it lies under one of `roots` (by default all three). Relative paths are taken from `base`
        (by default the data root). The resolved path is what the tools receive, never the text."""
        roots = roots or (self.runs, self.data, self.uploads)
        raw = str(text or "").strip()
        if not raw:
            raise UserError(f"{what}: empty; give a path under {self.describe(roots)}", code="app")
        try:
            path = Path(raw).expanduser()
            real = (path if path.is_absolute() else (base or self.data) / path).resolve()
        except (ValueError, OSError, RuntimeError) as e:  # NUL bytes, symlink loops
            raise UserError(f"{what}={raw!r}: not a usable path ({e})", code="app")
        if not any(inside(real, root) for root in roots):
            raise UserError(f"{what}={raw}: refused, it resolves to {real}, outside {self.describe(roots)}; "
                            "this app only reads and writes under those folders", code="path")
        return real

    def model(self, text, what: str) -> str | None:
        """A model typed in a form (a recogniser, a speaker model): None when empty; a hub id (`org/name`) as
        typed, unless data_root holds something named `org`; otherwise a folder under the roots, confined."""
        raw = str(text or "").strip()
        if not raw:
            return None
        org = raw.split("/")[0]
        if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", raw) and not os.path.lexists(self.data / org):
            return raw
        return str(self.confine(raw, what))

    def describe(self, roots) -> str:
        names = {self.runs: "runs", self.data: "data_root", self.uploads: "the upload folder"}
        return " or ".join(f"{names.get(r, 'root')} ({r})" for r in roots)

    def run_dir(self, name, must_exist: bool = True) -> Path:
        """A run folder from its name as the pages list it: one folder name, directly under the runs root."""
        name = str(name or "").strip()
        if not name:
            raise UserError("choose a run first", code="app")
        if "/" in name or "\0" in name or name in (".", "..") or name.startswith("."):
            raise UserError(f"run {name!r}: a run is named by one folder name under {self.runs}", code="app")
        path = self.runs / name
        if path.is_symlink() and not inside(path.resolve(), self.runs):
            raise UserError(f"run {name!r}: refused, {path} is a link to {path.resolve()}, outside {self.runs}", code="path")
        if must_exist and not (path / "manifest.yaml").is_file():
            raise UserError(f"run {name!r}: no run folder {path} (it holds no manifest.yaml)", code="app")
        return path
