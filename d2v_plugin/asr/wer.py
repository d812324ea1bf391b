"""Word and character error rates, with the edit distance from the ``editdistance`` library.

Conventions (the usual ones, e.g. sclite / fairseq's ``infer.py``):

* Sentences are split on whitespace; nothing else is normalised (case, punctuation): prepare
  references and hypotheses the same way (``prepare_labels`` upper-cases, decoding outputs
  upper-case letters).
* Errors = substitutions + insertions + deletions (Levenshtein distance over tokens); the
  rate is ``100 * errors / reference tokens``, pooled over the corpus (not a mean of
  per-utterance rates).
* CER counts characters of the words joined by single spaces, so a missing word boundary is
  one error (as fairseq's letter units, where ``|`` is a unit).
* Empty references: their hypothesis tokens all count as insertions. A corpus (or a single
  pair) with no reference tokens at all has rate 0.0 when the hypotheses are empty too and
  ``inf`` otherwise -- an error rate has no finite value there, and silently returning 0 or
  100 would hide the problem.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import editdistance


@dataclass(frozen=True)
class ErrorRate:
    """Edit-distance errors against a reference length; ``rate`` in percent."""

    errors: int
    ref_len: int

    @property
    def rate(self) -> float:
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else math.inf
        return 100.0 * self.errors / self.ref_len

    def __add__(self, other: "ErrorRate") -> "ErrorRate":
        return ErrorRate(self.errors + other.errors, self.ref_len + other.ref_len)

    def __str__(self) -> str:
        return f"{self.rate:.2f}% ({self.errors}/{self.ref_len})"


def _words(sentence: str) -> List[str]:
    return sentence.split()


def _chars(sentence: str) -> List[str]:
    return list(" ".join(sentence.split()))


def _errors(ref: Sequence[str], hyp: Sequence[str]) -> ErrorRate:
    return ErrorRate(int(editdistance.eval(ref, hyp)), len(ref))


def word_errors(ref: str, hyp: str) -> ErrorRate:
    """Word errors of one hypothesis against one reference."""
    return _errors(_words(ref), _words(hyp))


def char_errors(ref: str, hyp: str) -> ErrorRate:
    """Character errors of one hypothesis against one reference (spaces count)."""
    return _errors(_chars(ref), _chars(hyp))


def _pooled(refs: Sequence[str], hyps: Sequence[str], per_pair) -> ErrorRate:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses: "
                         f"scoring needs exactly one hypothesis per reference")
    total = ErrorRate(0, 0)
    for ref, hyp in zip(refs, hyps):
        total = total + per_pair(ref, hyp)
    return total


def wer(refs: Sequence[str], hyps: Sequence[str]) -> ErrorRate:
    """Corpus word error rate: summed word errors over summed reference words."""
    return _pooled(refs, hyps, word_errors)


def cer(refs: Sequence[str], hyps: Sequence[str]) -> ErrorRate:
    """Corpus character error rate: summed character errors over summed reference characters."""
    return _pooled(refs, hyps, char_errors)
