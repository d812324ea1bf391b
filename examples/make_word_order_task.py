#!/usr/bin/env python3
"""A word-order acceptability task (CoLA-like) from any one-sentence-per-line corpus.

Why: a topic is mostly a matter of which words occur, which a bag of token embeddings
already captures; whether a sentence's word order is English is a question about context,
the thing a masked-prediction objective learns first. Each line of ``{split}.txt`` becomes
one example: kept as it is (label ``original``) or with two neighbouring words exchanged
(label ``swapped``), chosen by a coin seeded with ``--seed``, so a sentence never appears in
both forms (no pair to compare) and the classes are balanced. The exchanged pair is drawn
among neighbours that differ; lines with fewer than ``--min-words`` words are left out.

Usage::

    python examples/make_word_order_task.py data/text/corpus data/text/word_order [--seed 1]

Writes ``OUT/{train,valid,test}.txt`` + ``.label`` and ``OUT/classes.txt`` (original, swapped),
the layout ``d2v-text-classification-prep --corpus OUT`` reads.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import List, Optional, Tuple

SPLITS = ("train", "valid", "test")
CLASSES = ("original", "swapped")


def swap_neighbours(words: List[str], rng: random.Random) -> Optional[List[str]]:
    """The words with one random pair of differing neighbours exchanged (None if there is none)."""
    candidates = [i for i in range(len(words) - 1) if words[i] != words[i + 1]]
    if not candidates:
        return None
    i = rng.choice(candidates)
    out = list(words)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


def make_split(lines: List[str], rng: random.Random, min_words: int) -> List[Tuple[str, str]]:
    examples = []
    for line in lines:
        words = line.split()
        if len(words) < min_words:
            continue
        swapped = swap_neighbours(words, rng) if rng.random() < 0.5 else None
        examples.append((" ".join(swapped), "swapped") if swapped else (" ".join(words), "original"))
    return examples


def make_task(corpus: Path, out: Path, seed: int = 1, min_words: int = 5) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        source = corpus / f"{split}.txt"
        if not source.exists():
            continue
        lines = source.read_text(encoding="utf-8").splitlines()
        examples = make_split(lines, random.Random(f"{seed}-{split}"), min_words)
        (out / f"{split}.txt").write_text("".join(t + "\n" for t, _ in examples), encoding="utf-8")
        (out / f"{split}.label").write_text("".join(l + "\n" for _, l in examples), encoding="utf-8")
        counts[split] = {c: sum(1 for _, l in examples if l == c) for c in CLASSES}
    (out / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    summary = {"source": str(corpus), "seed": seed, "min_words": min_words, "splits": counts}
    (out / "task.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path, help="folder with {train,valid,test}.txt, one sentence per line")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-words", type=int, default=5)
    args = p.parse_args(argv)
    summary = make_task(args.corpus, args.out, args.seed, args.min_words)
    print(json.dumps(summary["splits"]))
    return summary


if __name__ == "__main__":
    main()
