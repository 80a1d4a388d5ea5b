"""python -m finetune.app [runs=runs] [data_root=data] [host=127.0.0.1] [port=7860] [share=false]

A web page over the runs folder: prepare data, launch, watch, stop and resume fine-tunes, listen, compare and
export. Binds to 127.0.0.1 unless told otherwise, and never opens a public share link unless share=true."""
import os
import sys

from finetune.lock.errors import UserError, user_errors

DEFAULTS = {"runs": "runs", "data_root": "data", "host": "127.0.0.1", "port": "7860", "share": "false"}
LOCAL = ("127.0.0.1", "localhost", "::1")


def parse(argv: list[str]) -> dict:
    cfg = dict(DEFAULTS)
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise UserError(f"{arg}: expected key=value (keys: {', '.join(DEFAULTS)})", code="usage")
        if key not in DEFAULTS:
            raise UserError(f"{key}: unknown key; the app takes {', '.join(DEFAULTS)}", code="usage")
        cfg[key] = value
    if not cfg["port"].isdigit() or not 0 < int(cfg["port"]) < 65536:
        raise UserError(f"port={cfg['port']}: a port number from 1 to 65535", code="range")
    if cfg["share"] not in ("true", "false"):
        raise UserError(f"share={cfg['share']}: true or false", code="range")
    for key in ("runs", "data_root"):
        if not cfg[key].strip():
            raise UserError(f"{key}=: give a folder", code="app")
    return cfg


def main(argv: list[str]) -> None:
    with user_errors():
        cfg = parse(argv)
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
        from gradio.utils import get_upload_folder
        from starlette.middleware import Middleware

        from finetune.lock.builder import without_upstream_trainer

        from . import frontend, uploads
        from .launch import warm_up
        from .paths import Roots
        from .ui import build
        from .widgets import CSS, Ctx

        without_upstream_trainer()  # the app runs upstream's models, never its trainer (nor wandb, datasets)

        roots = Roots.make(cfg["runs"], cfg["data_root"], get_upload_folder())
        for folder in (roots.runs, roots.data):
            if folder.exists() and not folder.is_dir():
                raise UserError(f"{folder} is a file; give a folder", code="app")
            folder.mkdir(parents=True, exist_ok=True)
        if cfg["host"] not in LOCAL:
            print(f"warning: host={cfg['host']}: the app is reachable from the network, and it has no login; "
                  "anyone who reaches it can start processes here", file=sys.stderr)
        app = build(Ctx(roots))
        if frontend.missing():
            print(f"note: finetune/app/frontend.py's fixes of {', '.join(frontend.missing())}*.js do not apply to this "
                  "Gradio: its own files are served (the page works, with more work in the browser)", file=sys.stderr)
        app.queue(default_concurrency_limit=4)
        try:
            app.launch(server_name=cfg["host"], server_port=int(cfg["port"]), share=cfg["share"] == "true",
                       allowed_paths=[str(roots.runs), str(roots.data)], css=CSS, inbrowser=False, quiet=True,
                       ssr_mode=False, prevent_thread_lock=True, footer_links=[],
                       # Gradio's run history would keep every event's inputs and outputs (each refresh's tables,
                       # transcripts, paths) in the browser's storage, and rewrite all of it at each event
                       run_history=False, max_file_size=uploads.LIMIT_BYTES,
                       app_kwargs={"middleware": [Middleware(frontend.ServeFixed)]})
        except OSError as e:
            raise UserError(f"port={cfg['port']}: cannot listen on {cfg['host']}:{cfg['port']} ({e}); "
                            "pass another port=", code="app")
        print(f"app: http://{cfg['host']}:{cfg['port']}/ (runs: {roots.runs}; data_root: {roots.data})", flush=True)
        warm_up()
    try:
        app.block_thread()
    except KeyboardInterrupt:
        app.close()


if __name__ == "__main__":
    main(sys.argv[1:])
