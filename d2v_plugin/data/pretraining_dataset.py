"""What the audio, image and text pretraining datasets share.

Why a base class: the multi-mask batch expander samples the masks in the collater (inside
the data-loader workers), and every random draw there, as well as the order of the
samples, is a function of (seed, epoch, sample ids) only: ``ordered_indices`` is seeded
with (seed, epoch), the collater's generator with (seed, epoch, *ids). Nothing depends on
the training step's RNG state or on which worker builds a batch, which is what makes a
resumed run see exactly the batches, crops and masks of an uninterrupted one. Keeping that
plumbing in one place keeps the three modalities resuming the same way.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils

from ..masking import seeded_generator

# (num_rows, length, generator) -> (num_rows, length) bool, True = masked.
MaskSampler = Callable[[int, int, torch.Generator], torch.Tensor]


class PretrainingDataset(FairseqDataset):
    """Seeded order and batch generator for pretraining datasets.

    Subclasses set ``self.sizes`` (int64, one size per item: what ``max_tokens`` batching
    and the size-sorted order use) and implement ``__len__``, ``__getitem__`` and
    ``collater``; the collater draws from :meth:`batch_generator` (or calls
    :meth:`sample_mask`) so its draws are functions of (seed, epoch, ids).
    """

    def __init__(self, seed: int = 1, shuffle: bool = True):
        super().__init__()
        self.seed = seed
        self.shuffle = shuffle
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

    def sample_mask(self, mask_sampler: MaskSampler, ids: List[int], rows: int,
                    length: int) -> torch.Tensor:
        """``mask_sampler(rows, length, batch_generator(ids))``, checked to be (rows, length) bool."""
        mask = mask_sampler(rows, length, self.batch_generator(ids))
        if tuple(mask.shape) != (rows, length) or mask.dtype != torch.bool:
            raise ValueError(f"mask_sampler must return a ({rows}, {length}) bool mask, got "
                             f"{mask.dtype} {tuple(mask.shape)}, expected torch.bool ({rows}, {length})")
        return mask
