"""Remake docs/app.png: a tiny fine-tune with samples, the web app on it, its run page in Chromium.

    .venv/bin/python docs/screenshot.py        (about a minute on 2 cores; needs /usr/bin/chromium)
"""
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent)]  # app_browser, and the tests package it uses

from app_browser import AppServer, env, launch_browser, tab, wait_text  # noqa: E402


def main() -> None:
    from playwright.sync_api import sync_playwright

    top = Path(tempfile.mkdtemp(prefix="f5tune-shot-"))
    for sub in ("runs", "data", "cwd"):
        (top / sub).mkdir()
    subprocess.run([sys.executable, "-m", "finetune", "model=f5tts_tiny", "experiment=demo", "pretrained=null",
                    f"run.root={top / 'runs'}", "run.name=my-voice", "train.max_updates=40", "train.save_every=20",
                    "train.log_every=2", "train.log_samples=true", "train.sample_nfe_step=4"],
                   check=True, env=env(), capture_output=True)
    server = AppServer(top / "runs", top / "data", top / "cwd", env())
    try:
        server.wait()
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 1250})
            page.goto(server.url)
            page.wait_for_selector("#runs-table [data-testid=cell-0-0]")
            page.locator("#runs-table [data-testid=cell-0-0]").click()
            wait_text(page, "run-verified", "manifest verified")
            wait_text(page, "run-samples", "update 40")
            time.sleep(1.5)  # the curves draw after their data arrives
            page.screenshot(path=str(HERE / "app.png"))
            tab(page, "runs")
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)
    print(HERE / "app.png")


if __name__ == "__main__":
    main()
