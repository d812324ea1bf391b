"""What the audio, image and text pretraining datasets share.

Why a base class: the multi-mask batch expander samples the masks in the collater (inside
the data-loader workers), and every random draw there, as well as the order of the
samples, is a function of (seed, epoch, sample ids) only: ``ordered_indices`` is seeded
with (seed, epoch), the collater's generator with (seed, epoch, *ids). Nothing depends on
the training step's RNG state or on which worker builds a batch, which is what makes a
resumed run see exactly the batches, crops and masks of an uninterrupted one. Keeping that
plumbing in one place keeps the three modalities resuming the same way; the masks
themselves come from the batch expander (``expander.py``).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils

from .expander import BatchExpander


def seeded_generator(*numbers: int) -> torch.Generator:
    """A CPU generator seeded from integers (seed, epoch, sample ids...) reproducibly."""
    value = 0x9E3779B97F4A7C15
    for n in numbers:
        value = (value * 6364136223846793005 + int(n) + 1442695040888963407) % (1 << 63)
    return torch.Generator().manual_seed(value)


class PretrainingDataset(FairseqDataset):
    """Seeded order and batch generator for pretraining datasets.

    Subclasses set ``self.sizes`` (int64, one size per item: what ``max_tokens`` batching
    and the size-sorted order use) and implement ``__len__``, ``__getitem__`` and
    ``collater``; the collater draws from :meth:`batch_generator` and gets its student
    masks from :meth:`student_masks`, so its draws are functions of (seed, epoch, ids).
    ``expander`` (None: no masks, e.g. evaluation-only data) is the batch expander.
    """

    def __init__(self, seed: int = 1, shuffle: bool = True, expander: Optional[BatchExpander] = None):
        super().__init__()
        self.seed = seed
        self.shuffle = shuffle
        self.expander = expander
        self.epoch = 1
        self.sizes: Optional[np.ndarray] = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return False  # order, crops and masks depend on the epoch

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return self.sizes[indices]

    def size(self, index: int) -> int:
        return int(self.sizes[index])

    def ordered_indices(self) -> np.ndarray:
        """Longest first, random among equal sizes (a permutation seeded by (seed, epoch))."""
        if self.shuffle:
            with data_utils.numpy_seed(self.seed, self.epoch):
                order = [np.random.permutation(len(self))]
        else:
            order = [np.arange(len(self))]
        order.append(self.sizes)
        return np.lexsort(order)[::-1]

    def batch_generator(self, ids: List[int]) -> torch.Generator:
        """The collater's generator for the batch of sample ``ids``, seeded by (seed, epoch, *ids)."""
        return seeded_generator(self.seed, self.epoch, *ids)

    def student_masks(self, ids: List[int], length: int,
                      generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        """The expander's (len(ids) * M, length) masks for the batch of sample ``ids``, drawn
        from ``generator`` (default: a fresh :meth:`batch_generator`); None without an expander."""
        if self.expander is None:
            return None
        return self.expander.masks(len(ids), length,
                                   generator if generator is not None else self.batch_generator(ids))
