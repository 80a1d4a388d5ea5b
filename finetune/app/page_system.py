"""System: what this machine offers a fine-tune: devices and their memory, the machine's memory and cores, the
versions of torch, CUDA, f5-tts and the rest, and the free disk under the runs and data roots."""
import platform
import shutil
import sys
from importlib import metadata

import gradio as gr

from .runs import human_size
from .widgets import Ctx

PACKAGES = ("torch", "torchaudio", "f5-tts", "accelerate", "transformers", "peft", "gradio")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def report(ctx: Ctx) -> list[list[str]]:
    """[what, value] rows."""
    import psutil
    import torch

    rows = [["python", f"{sys.version.split()[0]} ({sys.executable})"], ["platform", platform.platform()],
            ["CPU cores", f"{psutil.cpu_count(logical=False)} physical, {psutil.cpu_count()} logical"]]
    mem = psutil.virtual_memory()
    rows.append(["memory", f"{human_size(mem.available)} free of {human_size(mem.total)}"])
    rows += [[name, _version(name)] for name in PACKAGES]
    rows.append(["CUDA (torch built with)", torch.version.cuda or "none (a CPU build)"])
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            props = torch.cuda.get_device_properties(i)
            rows.append([f"cuda:{i}", f"{props.name}, compute {props.major}.{props.minor}, "
                                      f"{human_size(free)} free of {human_size(total)}"])
    else:
        rows.append(["devices", "no CUDA device: training and inference run on the CPU"])
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        rows.append(["mps", "available"])
    for name, root in (("runs", ctx.roots.runs), ("data_root", ctx.roots.data)):
        try:
            usage = shutil.disk_usage(root)
            rows.append([f"disk under {name}", f"{human_size(usage.free)} free of {human_size(usage.total)} ({root})"])
        except OSError as e:
            rows.append([f"disk under {name}", f"cannot read ({e.strerror})"])
    return rows


def build(ctx: Ctx, app: gr.Blocks) -> None:
    table = gr.Dataframe(headers=["", "value"], interactive=False, wrap=True, elem_id="sys-table",
                         column_widths=["20%", "80%"])
    refresh = gr.Button("Refresh", elem_id="sys-refresh")
    gr.on([app.load, refresh.click], lambda: report(ctx), None, table, queue=False)
