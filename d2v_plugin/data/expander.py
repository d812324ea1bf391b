"""The multi-mask batch expander: each sample of a batch becomes M = ``clone_batch`` student
rows, each with its own mask; the teacher still sees each sample once.

Two halves, one per side of the data loader:

- in the collater (data-loader workers), :meth:`BatchExpander.masks` samples the
  (B * M, T) student masks with the modality's mask sampler and a generator seeded by
  (seed, epoch, sample ids), so the training step samples nothing and a resumed run sees
  the same masks as an uninterrupted one. The audio, image and text collaters all call it;
- in the model, :func:`expand_rows` copies the B encoded samples to the B * M rows those
  masks apply to (row b -> rows b*M .. b*M+M-1, the order the masks are laid out in).

The model config is the single source of both settings: the pretraining task builds the
expander from the built model (``MaskedPretrainingTask.build_model``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..masking import MaskSampler


@dataclass(frozen=True)
class BatchExpander:
    """M = ``clone_batch`` masks per sample from ``mask_sampler`` (picklable, as are both
    fields, so the expander travels to spawned data-loader workers)."""

    clone_batch: int
    mask_sampler: MaskSampler

    def __post_init__(self):
        if self.clone_batch < 1:
            raise ValueError(f"clone_batch must be >= 1, got {self.clone_batch}")

    def masks(self, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """(batch_size * clone_batch, length) bool, True = masked; sample b owns rows
        b*M .. b*M+M-1. Checked, so a faulty sampler fails here with its shapes, not later
        inside the model."""
        rows = batch_size * self.clone_batch
        mask = self.mask_sampler(rows, length, generator)
        if tuple(mask.shape) != (rows, length) or mask.dtype != torch.bool:
            raise ValueError(f"mask_sampler must return a ({rows}, {length}) bool mask, got "
                             f"{mask.dtype} {tuple(mask.shape)}, expected torch.bool ({rows}, {length})")
        return mask


def expand_rows(t: Optional[torch.Tensor], clone_batch: int) -> Optional[torch.Tensor]:
    """The model's half of the expander: row b of ``t`` becomes rows b*M .. b*M+M-1."""
    if t is None or clone_batch == 1:
        return t
    return t.repeat_interleave(clone_batch, dim=0)
