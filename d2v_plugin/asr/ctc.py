"""Greedy (Viterbi) CTC decoding and letter post-processing, independent of fairseq.

Why not fairseq's decoders: ``examples/speech_recognition`` is not part of the installed
package, and greedy CTC is three lines once the padding is handled explicitly.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

import torch

WORD_BOUNDARY = "|"


def collapse(frame_ids: Iterable[int], blank: int) -> List[int]:
    """CTC collapse: merge runs of the same id, then drop blanks (``a a - a`` -> ``a a``)."""
    out: List[int] = []
    prev: Optional[int] = None
    for idx in frame_ids:
        if idx != prev and idx != blank:
            out.append(idx)
        prev = idx
    return out


def greedy_decode(emissions: torch.Tensor, padding_mask: Optional[torch.Tensor],
                  blank: int) -> List[List[int]]:
    """Best path per utterance from (B, T, V) scores, ignoring padded frames.

    ``padding_mask`` is (B, T), True at padding (the encoder's frame-level mask), or None.
    """
    best = emissions.argmax(dim=-1).cpu()  # (B, T)
    if padding_mask is None:
        lengths = [best.size(1)] * best.size(0)
    else:
        lengths = (~padding_mask.bool()).sum(dim=1).tolist()
    return [collapse(best[b, :n].tolist(), blank) for b, n in enumerate(lengths)]


def units_to_words(units: str) -> str:
    """Letter units to words, as fairseq's ``post_process(units, "letter")``:
    ``"H I | Y O U |"`` -> ``"HI YOU"``."""
    return " ".join(units.replace(" ", "").replace(WORD_BOUNDARY, " ").split())


def ids_to_units(ids: Sequence[int], symbols: Sequence[str], skip: Iterable[int] = ()) -> str:
    """Space-separated unit string for token ids, leaving out the ``skip`` ids (specials)."""
    skip = set(skip)
    return " ".join(symbols[i] for i in ids if i not in skip)
