"""Two fixes to Gradio's frontend, served by the app in place of Gradio's own files (the page's work in the browser).

- Blocks-<hash>.js: at each status change of each event (a click, a field's change, a timer's tick: two or more per
  event), Gradio 6 sends every component that has ever been an event's output its loading status, changed or not,
  and each send deep-copies all of that component's props (one structuredClone per leaf). With this app's 125
  outputs that was half of the browser's work: over the browser tests the page's renderer spent 88 CPU-seconds,
  and 42 with both fixes. The fix sends a status only where it differs from the one sent last; a reload of the
  page's dependencies starts over.
- statustracker-<hash>.js: a status tracker removed from the page while pending (the page's own "loading" one, at
  every load) keeps its timer's requestAnimationFrame loop running for as long as the tab is open: an idle page
  cost Chromium 1.7 to 1.9 CPU-seconds per 20 s, and 0.06 with the fix, which ends the loop when the tracker goes.

Each replacement is of exact text. Where the installed Gradio's file does not hold it once (another release),
Gradio's own file is served and a note says so; tests/test_app.py then fails, so that an upgrade is looked at.
"""
import importlib.resources
from functools import cache

# Gradio 6.31's minified files: file name prefix -> (text, its replacement) pairs
FIXES = {
    "Blocks-": [
        ("async update_loading_stati_state(){await Promise.all(Object.entries(this.loading_stati.current)"
         ".map(([e,t])=>this.update_state_cb(Number(e),{loading_status:t},!1)))}",
         "async update_loading_stati_state(){let s=this.sent_stati||={};"
         "await Promise.all(Object.entries(this.loading_stati.current)"
         ".filter(([e,t])=>{let k=JSON.stringify(t);return s[e]!==k&&(s[e]=k,!0)})"
         ".map(([e,t])=>this.update_state_cb(Number(e),{loading_status:t},!1)))}"),
        ("reload(e,t,n,r,i){", "reload(e,t,n,r,i){this.sent_stati={};"),
    ],
    "statustracker-": [  # an effect without dependencies: its teardown runs when the tracker is destroyed
        ("O(()=>{o.status===`pending`?Ve():ee(()=>{He()})})",
         "O(()=>()=>{W=!1}),O(()=>{o.status===`pending`?Ve():ee(()=>{He()})})"),
    ],
}


@cache
def patched() -> dict[str, bytes]:
    """{file name: fixed text} for each fix whose file in the installed Gradio holds each text it replaces once."""
    fixed = {}
    for asset in importlib.resources.files("gradio").joinpath("templates/frontend/assets").iterdir():
        for prefix, replacements in FIXES.items():
            if asset.name.startswith(prefix) and asset.name.endswith(".js"):
                text = asset.read_text(encoding="utf-8")
                if all(text.count(old) == 1 for old, _ in replacements):
                    for old, new in replacements:
                        text = text.replace(old, new)
                    fixed[asset.name] = text.encode()
    return fixed


def missing() -> list[str]:
    """The fixes that do not apply to the installed Gradio."""
    return [prefix for prefix in FIXES if not any(name.startswith(prefix) for name in patched())]


class ServeFixed:
    """ASGI middleware: GET /assets/<a file fixed here> answers with the fixed text; anything else passes."""

    def __init__(self, app):
        self.app, self.files = app, {f"/assets/{name}": body for name, body in patched().items()}

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        body = self.files.get(path[path.rfind("/assets/"):]) if scope["type"] == "http" and "/assets/" in path else None
        if body is None:
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/javascript; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
