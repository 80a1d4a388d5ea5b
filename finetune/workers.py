"""One job per item over worker processes, with a progress bar on stderr."""
import sys


def _worker_init():
    import torch

    torch.set_num_threads(1)  # one item per process; threads inside would only contend


def pmap(job, items: list, workers: int, desc: str, unit: str) -> list:
    from .media.progress import bar as tqdm

    bar = dict(total=len(items), desc=desc, unit=unit, file=sys.stderr, mininterval=0.5)
    workers = min(workers, max(len(items), 1))
    if workers <= 1:
        return [job(item) for item in tqdm(iterable=items, **bar)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: workers start in milliseconds and share the imports already made
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init) as pool:
        return list(tqdm(iterable=pool.map(job, items, chunksize=max(1, min(16, len(items) // (workers * 4)))), **bar))
