"""Training batches: clips in frame-budget batches, in upstream's order, collated as upstream's trainer does."""
import torch

from .media.dataset import Clip, collate  # noqa: F401  (collate: the batches a DataLoader gives)
from .lock.errors import UserError


def check_frame_budget(clips: list[Clip], data_cfg: dict, hop_seconds: float) -> None:
    """Upstream's sampler silently drops clips over the budget; with none left it divides by zero (#1131)."""
    longest = max(clips, key=lambda c: c.frames)
    budget = data_cfg["frames_per_batch"]
    if longest.frames > budget:
        raise UserError(f"data.frames_per_batch={budget} is smaller than the longest clip ({longest.where}: "
                        f"{longest.frames} frames, {longest.frames * hop_seconds:.1f} s); raise data.frames_per_batch "
                        f"to at least {longest.frames}, or prepare the data with a lower max_seconds", code="range")


class FrameBatches:
    """Batches of clips whose frames sum to at most `frames_per_batch`, reshuffled each epoch.

    Clips are sorted by length so padding stays small, as upstream's DynamicBatchSampler does;
    the order of batches is a pure function of (seed, epoch), which makes resume exact.
    """

    def __init__(self, lengths: list[int], frames_per_batch: int, max_samples: int, seed: int):
        assert max(lengths) <= frames_per_batch, "check_frame_budget runs before a run starts"
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        self.batches, batch, frames = [], [], 0
        for i in order:
            if batch and (frames + lengths[i] > frames_per_batch or len(batch) == max_samples):
                self.batches.append(batch)
                batch, frames = [], 0
            batch.append(i)
            frames += lengths[i]
        self.batches.append(batch)
        self.seed, self.epoch = seed, 0

    def shuffle_for(self, epoch: int) -> None:
        """The epoch whose order __iter__ gives. Not named set_epoch: accelerate calls a batch sampler's
        set_epoch with its own count of the loader's iterations, which a resumed run (iterating a
        skip_first_batches copy) would not share with an uninterrupted one."""
        self.epoch = epoch

    def __iter__(self):
        # upstream's order: its DynamicBatchSampler shuffles with seed + epoch, but accelerate resets that epoch
        # to its loader's count of iterations, which the first epoch (upstream iterates a skip_first_batches copy
        # there) does not advance: epochs 0, 1, 2, ... shuffle with seed, seed, seed + 1, ...
        g = torch.Generator().manual_seed(self.seed + max(self.epoch - 1, 0))
        return iter([self.batches[i] for i in torch.randperm(len(self.batches), generator=g).tolist()])

    def __len__(self) -> int:
        return len(self.batches)


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, clips: list[Clip]):
        self.clips = clips

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        return self.clips[i].with_mel()
