"""A small word n-gram LM (ARPA) and a letter lexicon from transcripts, in pure Python.

Why this exists: lexicon + LM beam search (``infer --lm``) needs an ARPA file and a lexicon,
and KenLM's ``lmplz`` is not pip-installable. For real corpora use ``lmplz``; for the
embedded corpus and tests a unigram/bigram model with absolute discounting is plenty.

Model (Katz-style back-off, the form ARPA files express):

* unigrams over the vocabulary plus ``</s>`` and ``<unk>``, add-one smoothed, so every
  word (and ``<unk>``) has non-zero probability; ``<s>`` gets the ARPA convention -99;
* bigrams ``p(w|u) = (c(u,w) - D) / c(u,.)`` for seen pairs; the freed mass
  ``D * N1+(u,.) / c(u,.)`` goes to unseen words through the back-off weight
  ``bow(u) = freed mass / (1 - sum of p_uni(w) over the words seen after u)``, so each
  conditional distribution sums to one.

Lexicon lines: ``WORD<TAB>W O R D |`` (letters, then the ``|`` word boundary), the spelling
convention of fairseq's letter CTC models.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .. import console

logger = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def read_sentences(paths: Iterable[str], show_progress: bool = False) -> List[List[str]]:
    """Whitespace-tokenised non-empty lines of text files (e.g. ``train.wrd``)."""
    sentences = []
    with console.Progress("reading transcripts", None, "lines", enabled=show_progress) as progress:
        for path in paths:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        sentences.append(line.split())
                    progress.advance()
    return sentences


def bigram_arpa(sentences: Sequence[Sequence[str]], order: int = 2, discount: float = 0.5,
                show_progress: bool = False) -> str:
    """The ARPA text of a unigram (``order=1``) or bigram (``order=2``) model of ``sentences``."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if not 0.0 < discount < 1.0:
        raise ValueError(f"discount must be in (0, 1), got {discount}")
    if not sentences:
        raise ValueError("no sentences to estimate a language model from")
    unigrams: Counter = Counter()
    bigrams: Counter = Counter()
    with console.Progress("counting n-grams", len(sentences), "sentences", enabled=show_progress) as progress:
        for words in sentences:
            tokens = [BOS, *words, EOS]
            unigrams.update(tokens[1:])
            bigrams.update(zip(tokens[:-1], tokens[1:]))
            progress.advance()
    vocab = sorted(set(unigrams) | {UNK})
    total = sum(unigrams.values())
    p_uni = {w: (unigrams[w] + 1) / (total + len(vocab)) for w in vocab}

    bows: Dict[str, float] = {}
    probs2: Dict[Tuple[str, str], float] = {}
    if order == 2:
        context_total: Counter = Counter()
        followers: Dict[str, List[str]] = {}
        for (u, w), c in bigrams.items():
            context_total[u] += c
            followers.setdefault(u, []).append(w)
        for u, ws in followers.items():
            n = context_total[u]
            for w in ws:
                probs2[(u, w)] = (bigrams[(u, w)] - discount) / n
            freed = discount * len(ws) / n
            unseen_mass = 1.0 - sum(p_uni[w] for w in ws)
            bows[u] = freed / unseen_mass if unseen_mass > 1e-12 else 1.0

    lines = ["", "\\data\\", f"ngram 1={len(vocab) + 1}"]
    if order == 2:
        lines.append(f"ngram 2={len(probs2)}")
    lines += ["", "\\1-grams:"]
    for w in [BOS, *vocab]:
        logp = -99.0 if w == BOS else math.log10(p_uni[w])
        if order == 2 and w in bows:
            lines.append(f"{logp:.6f}\t{w}\t{math.log10(bows[w]):.6f}")
        else:
            lines.append(f"{logp:.6f}\t{w}")
    if order == 2:
        lines += ["", "\\2-grams:"]
        lines += [f"{math.log10(p):.6f}\t{u} {w}" for (u, w), p in sorted(probs2.items())]
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def lexicon_lines(words: Iterable[str]) -> List[str]:
    """``WORD<TAB>W O R D |`` for each distinct word, sorted."""
    return [f"{w}\t{' '.join(w)} |" for w in sorted(set(words)) if w not in (BOS, EOS, UNK)]


def write_lm(sentences: Sequence[Sequence[str]], out_dir: str, order: int = 2,
             discount: float = 0.5, extra_words: Iterable[str] = (),
             show_progress: bool = False) -> Tuple[str, str]:
    """Write ``lm.arpa`` and ``lexicon.txt`` into ``out_dir``; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    arpa = os.path.join(out_dir, "lm.arpa")
    lexicon = os.path.join(out_dir, "lexicon.txt")
    with open(arpa, "w", encoding="utf-8") as f:
        f.write(bigram_arpa(sentences, order, discount, show_progress))
    words = [w for s in sentences for w in s] + list(extra_words)
    with open(lexicon, "w", encoding="utf-8") as f:
        f.write("\n".join(lexicon_lines(words)) + "\n")
    logger.info("wrote %s (%d-gram) and %s", arpa, order, lexicon)
    return arpa, lexicon


def main(argv: Optional[Sequence[str]] = None) -> Tuple[str, str]:
    parser = argparse.ArgumentParser(
        prog="d2v-lm", description="Write a unigram/bigram ARPA LM and a letter lexicon from "
                                   "word transcripts (e.g. train.wrd), for `d2v-infer --lm`.")
    parser.add_argument("text", nargs="+", help="text files, one sentence per line (upper-case words)")
    parser.add_argument("--out-dir", required=True, help="where lm.arpa and lexicon.txt go")
    parser.add_argument("--order", type=int, default=2, choices=(1, 2))
    parser.add_argument("--discount", type=float, default=0.5, help="absolute discount D (bigrams)")
    parser.add_argument("--lexicon-words", nargs="*", default=[],
                        help="more text files whose words go into the lexicon only (not the LM counts)")
    args = parser.parse_args(argv)
    extra = [w for s in read_sentences(args.lexicon_words, show_progress=True) for w in s]
    paths = write_lm(read_sentences(args.text, show_progress=True), args.out_dir, args.order,
                     args.discount, extra, show_progress=True)
    print(f"lm: {paths[0]}\nlexicon: {paths[1]}")
    return paths


def cli() -> int:
    return console.run(main, "d2v-lm", (ValueError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(cli())
