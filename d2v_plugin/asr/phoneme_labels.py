"""Phoneme and speaker labels of a speech corpus, greedy CTC decoding and phoneme error rate.

The corpus layout is ``examples/make_speech_corpus.py``'s: ``<split>.phn`` (space-separated
phonemes, one utterance per line, aligned with ``<split>.tsv``), ``dict.phn.txt`` (fairseq
dictionary format, ``SYMBOL COUNT`` per line) and ``<split>.spk`` (one speaker name per line).
Every problem is reported with the file and line.
"""
from __future__ import annotations

import os
from typing import List, Sequence

import torch

from ..console import UserInputError
from .wer import ErrorRate, wer

BLANK = 0  # CTC blank index; phoneme i of the dictionary is class i + 1


def _read_lines(path: str, what: str, hint: str = "") -> List[str]:
    if not os.path.isfile(path):
        raise UserInputError(f"{path}: {what} not found{hint}")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def read_dictionary(path: str) -> List[str]:
    """The symbols of a fairseq dictionary file, in file order."""
    symbols: List[str] = []
    for number, line in enumerate(_read_lines(path, "phoneme dictionary", _REGENERATE), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[1].lstrip("-").isdigit():
            raise UserInputError(f"{path}:{number}: expected 'SYMBOL COUNT', got {line!r}")
        if fields[0] in symbols:
            raise UserInputError(f"{path}:{number}: symbol {fields[0]!r} listed twice")
        symbols.append(fields[0])
    if not symbols:
        raise UserInputError(f"{path}: the phoneme dictionary is empty")
    return symbols


_REGENERATE = (" (this corpus has no phoneme labels: regenerate it with "
               "examples/make_speech_corpus.py, corpus version 2 or later)")


def read_phonemes(path: str, symbols: Sequence[str], expected_lines: int) -> List[List[int]]:
    """Class indices (dictionary index + 1, 0 is the CTC blank) of every line of a ``.phn`` file."""
    index = {s: i + 1 for i, s in enumerate(symbols)}
    lines = _read_lines(path, "phoneme labels", _REGENERATE)
    if len(lines) != expected_lines:
        raise UserInputError(f"{path}: {len(lines)} lines but the manifest has {expected_lines} "
                             f"utterances (one phoneme line per utterance, in manifest order)")
    labels = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            raise UserInputError(f"{path}:{number}: no phonemes")
        unknown = [t for t in tokens if t not in index]
        if unknown:
            raise UserInputError(f"{path}:{number}: phoneme(s) {sorted(set(unknown))} not in the "
                                 f"dictionary dict.phn.txt")
        labels.append([index[t] for t in tokens])
    return labels


def read_speakers(path: str, expected_lines: int) -> List[str]:
    lines = _read_lines(path, "speaker labels", _REGENERATE)
    if len(lines) != expected_lines:
        raise UserInputError(f"{path}: {len(lines)} lines but the manifest has {expected_lines} utterances")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise UserInputError(f"{path}:{number}: empty speaker name")
    return [line.strip() for line in lines]


def greedy_ctc_decode(emissions: torch.Tensor, blank: int = BLANK) -> List[int]:
    """Best path of (T, C) scores: argmax per frame, repeats merged, blanks removed."""
    best = emissions.argmax(-1).tolist()
    out, previous = [], None
    for label in best:
        if label != previous and label != blank:
            out.append(label)
        previous = label
    return out


def phoneme_error_rate(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]]) -> ErrorRate:
    """Corpus PER: summed phoneme edit distances over summed reference phonemes (``wer`` on
    phoneme tokens)."""
    as_text = lambda seqs: [" ".join(map(str, s)) for s in seqs]  # noqa: E731
    return wer(as_text(refs), as_text(hyps))
