"""Mask sampling: the student masks the batch expander (``data/expander.py``) draws, and
the index tensors the model drops and restores masked positions with.

Pure, vectorised functions (no Python loop over rows) so they are cheap enough to run
inside data-loader workers for every batch. ``True`` in a mask means *masked* (hidden
from the student, regressed by the decoder).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Tuple

import torch

# What every modality's sampler is: (num_rows, length, generator or None) -> (num_rows,
# length) bool, True = masked. Picklable instances (the dataclasses below), so that
# data-loader workers can run them.
MaskSampler = Callable[[int, int, Optional[torch.Generator]], torch.Tensor]


class MaskInfo(NamedTuple):
    """Where each student row keeps and drops frames.

    mask:        (R, T) bool, True = masked.
    ids_keep:    (R, K) long, positions of the kept frames in increasing order.
    ids_restore: (R, T) long, for each position its index in ``cat([kept, masked])``;
                 gathering with it puts kept tokens and mask tokens back in place.
    """

    mask: torch.Tensor
    ids_keep: torch.Tensor
    ids_restore: torch.Tensor


def num_block_starts(length: int, mask_prob: float, mask_length: int, mask_prob_adjust: float = 0.0,
                     inverse: bool = False) -> int:
    """L * (p + A) / B block starts, p the chosen fraction (1 - R for inverse masking)."""
    chosen_prob = 1.0 - mask_prob if inverse else mask_prob
    return max(0, min(length, int(length * (chosen_prob + mask_prob_adjust) / mask_length)))


def sample_blocks(num_rows: int, length: int, num_starts: int, block_length: int,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(num_rows, length) bool: ``num_starts`` distinct centres per row, each grown to a block
    of ``block_length`` frames (blocks may overlap and are clipped at the edges)."""
    chosen = torch.zeros(num_rows, length, dtype=torch.bool)
    if num_starts > 0:
        starts = torch.rand(num_rows, length, generator=generator).topk(num_starts, dim=1).indices
        offsets = torch.arange(block_length) - block_length // 2
        positions = (starts.unsqueeze(-1) + offsets).clamp_(0, length - 1).flatten(1)
        chosen.scatter_(1, positions, True)
    return chosen


def sample_block_mask(
    num_rows: int,
    length: int,
    mask_prob: float,
    mask_length: int,
    mask_prob_adjust: float = 0.0,
    inverse: bool = False,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Sample a (num_rows, length) bool mask in which every row masks the same count.

    Span masking (``inverse=False``): about ``length * (mask_prob + adjust) / mask_length``
    span centres are drawn without replacement and grown to ``mask_length`` frames.
    Inverse block masking (``inverse=True``) draws blocks to *keep* the same way, with
    ``1 - mask_prob`` in place of ``mask_prob``, and masks the rest. Blocks may overlap,
    which is why ``mask_prob_adjust`` exists. Finally each row is fixed to exactly
    ``int(length * p)`` selected frames (p the selected fraction) by dropping random
    surplus frames or adding random extra ones, so all student rows have equal length.
    """
    chosen_prob = 1.0 - mask_prob if inverse else mask_prob
    chosen = sample_blocks(num_rows, length, num_block_starts(length, mask_prob, mask_length,
                                                             mask_prob_adjust, inverse),
                           mask_length, generator)
    return _fix_count(chosen, int(length * chosen_prob), inverse, generator)


def _fix_count(chosen: torch.Tensor, target: int, inverse: bool,
               generator: Optional[torch.Generator]) -> torch.Tensor:
    """Select exactly ``target`` positions per row, preferring the ``chosen`` ones, and return
    the mask (the complement of the selection for inverse masking).

    Ranks positions: chosen ones first (random order among them), then the rest, and takes
    the top ``target``: trims surplus and fills shortfall in one vectorised step.
    """
    num_rows, length = chosen.shape
    score = torch.rand(num_rows, length, generator=generator) + chosen.float()
    fixed = torch.zeros(num_rows, length, dtype=torch.bool)
    if target > 0:
        fixed.scatter_(1, score.topk(target, dim=1).indices, True)
    return ~fixed if inverse else fixed


@dataclass(frozen=True)
class BlockMaskSampler:
    """``sample_block_mask`` with fixed settings: a picklable ``(rows, length, generator)``
    callable that the data loader's workers use to expand a batch into its student masks."""

    mask_prob: float
    mask_length: int
    mask_prob_adjust: float = 0.0
    inverse: bool = False

    def __call__(self, num_rows: int, length: int, generator: Optional[torch.Generator] = None):
        return sample_block_mask(num_rows, length, self.mask_prob, self.mask_length,
                                 self.mask_prob_adjust, self.inverse, generator=generator)


def grid_shape(length: int) -> Tuple[int, int]:
    """(height, width) of a square patch grid of ``length`` tokens; refuses non-squares."""
    side = int(round(length ** 0.5))
    if side * side != length:
        raise ValueError(f"2D block masking needs a square patch grid, got {length} tokens")
    return side, side


def sample_blocks_2d(num_rows: int, height: int, width: int, num_starts: int, block_size: int,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(num_rows, height * width) bool, row-major over the patch grid: ``num_starts``
    distinct centres per row, each grown to a ``block_size`` x ``block_size`` square
    (centred, offset ``block_size // 2``; squares may overlap and are clipped at the edges)."""
    length = height * width
    chosen = torch.zeros(num_rows, length, dtype=torch.bool)
    if num_starts > 0:
        starts = torch.rand(num_rows, length, generator=generator).topk(num_starts, dim=1).indices
        offsets = torch.arange(block_size) - block_size // 2
        rows = (torch.div(starts, width, rounding_mode="floor").unsqueeze(-1) + offsets).clamp_(0, height - 1)
        cols = (starts.remainder(width).unsqueeze(-1) + offsets).clamp_(0, width - 1)
        positions = rows.unsqueeze(-1) * width + cols.unsqueeze(-2)  # (R, S, block, block)
        chosen.scatter_(1, positions.flatten(1), True)
    return chosen


def sample_block_mask_2d(
    num_rows: int,
    height: int,
    width: int,
    mask_prob: float,
    mask_length: int,
    mask_prob_adjust: float = 0.0,
    inverse: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """2D (inverse) block masking over a ``height`` x ``width`` patch grid, row-major:
    (num_rows, height * width) bool with the same count masked in every row.

    Inverse masking (images, the default): about ``L * ((1 - R) + A) / B**2`` squares of
    ``B = mask_length`` patches are drawn to *keep*; everything else is masked. Then every
    row is fixed to exactly ``int(L * (1 - R))`` kept patches by dropping random surplus
    or adding random extra patches, as ``sample_block_mask`` does in 1D. ``inverse=False``
    draws the squares to mask instead (``L * (R + A) / B**2`` of them).
    """
    length = height * width
    chosen_prob = 1.0 - mask_prob if inverse else mask_prob
    # The 1D formula with a square's area as the block length: L * (p + A) / B**2.
    num_starts = num_block_starts(length, mask_prob, mask_length ** 2, mask_prob_adjust, inverse)
    chosen = sample_blocks_2d(num_rows, height, width, num_starts, mask_length, generator)
    return _fix_count(chosen, int(length * chosen_prob), inverse, generator)


@dataclass(frozen=True)
class BlockMaskSampler2d:
    """``sample_block_mask_2d`` with fixed settings, on the square grid of ``length`` patches:
    a picklable ``(rows, length, generator)`` callable like ``BlockMaskSampler``."""

    mask_prob: float
    mask_length: int
    mask_prob_adjust: float = 0.0
    inverse: bool = True

    def __call__(self, num_rows: int, length: int, generator: Optional[torch.Generator] = None):
        height, width = grid_shape(length)
        return sample_block_mask_2d(num_rows, height, width, self.mask_prob, self.mask_length,
                                    self.mask_prob_adjust, self.inverse, generator=generator)


def mask_info_from_mask(mask: torch.Tensor) -> MaskInfo:
    """Index tensors for dropping masked frames and putting them back (see MaskInfo)."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be (rows, frames), got shape {tuple(mask.shape)}")
    counts = mask.sum(dim=1)
    if mask.size(0) > 0 and bool((counts != counts[0]).any()):
        raise ValueError(f"every mask row must mask the same number of frames, got counts "
                         f"{counts.tolist()}")
    num_keep = mask.size(1) - int(counts[0]) if mask.size(0) > 0 else mask.size(1)
    ids_shuffle = mask.to(torch.uint8).argsort(dim=1, stable=True)  # kept first, in order
    ids_restore = ids_shuffle.argsort(dim=1, stable=True)
    return MaskInfo(mask=mask, ids_keep=ids_shuffle[:, :num_keep], ids_restore=ids_restore)


def sample_channel_mask(batch: int, channels: int, mask_prob: float, mask_length: int,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(batch, channels) bool mask of channel spans, used during fine-tuning."""
    num_starts = int(round(channels * mask_prob / mask_length))
    mask = torch.zeros(batch, channels, dtype=torch.bool)
    if num_starts <= 0:
        return mask
    starts = torch.rand(batch, channels, generator=generator).topk(num_starts, dim=1).indices
    positions = (starts.unsqueeze(-1) + torch.arange(mask_length)).clamp_(0, channels - 1)
    return mask.scatter_(1, positions.flatten(1), True)
