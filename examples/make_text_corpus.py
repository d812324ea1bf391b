#!/usr/bin/env python3
"""Write a small, real English text corpus from the Python documentation that CPython ships.

Why this source: ``pydoc_data.topics.topics`` (the text behind ``help("try")``) is about
400 kB of edited English prose about Python, present in every CPython install, so the text
pipeline and its tests need no download. Each line of the corpus comes from a known
documentation topic, which gives a sentence-classification task for probing (``which topic
does this sentence come from?``).

Cleaning (the topics are reStructuredText rendered as plain text):

* paragraphs = runs of non-blank lines; wrapped lines are joined (a line ending in a hyphen
  is joined without a space: the rendering only breaks *at* real hyphens);
* dropped: headings (a line underlined with ``***``/``===``/``---``), tables, grammar
  (``::=``), doctests (``>>>``), pdb sessions, and literal blocks (a paragraph more indented
  than a preceding paragraph that ends with ``:``, unless it is a list item);
* ``*emphasis*`` markers and footnote marks ``[1]`` are removed, list bullets stripped;
* paragraphs are split into sentences (not after ``e.g.``, ``i.e.``, ``etc.``, initials);
  a sentence is kept when it has at least 5 words and at least 80 % of its words are plain
  words (inline code, which the rendering puts in double quotes, counts as one word);
* one sentence per line; a sentence that occurs several times is kept once.

Labels: several topics nest (``specialnames`` contains all of ``customization``,
``compound`` contains ``try``, ``with``, ...). Each sentence is labelled with the *largest*
topic (most characters) that contains it, i.e. nested sections are folded into the section
that holds them, so no sentence has two labels. ``{split}.label`` holds that topic for every
line of ``{split}.txt``; ``classes.txt`` lists the ``--num-classes`` (default 10) topics with
the most lines, the suggested classes for a probe (lines of other topics are still in the
text, for pretraining; a probe skips them).

Splits: per topic, a seeded shuffle puts ``--valid-fraction`` / ``--test-fraction`` of its
lines (rounded) into valid / test and the rest into train (stratified, so every class of the
probe appears in every split); each split keeps document order (topics by name, sentences
in reading order), so neighbouring lines of a pretraining block are mostly related.

The text depends on the Python version (the topics are regenerated for each release); the
stamp records it, and a corpus made by another version is rebuilt.

Layout::

    OUT_DIR/{train,valid,test}.txt     one sentence per line, UTF-8
    OUT_DIR/{train,valid,test}.label   the topic of each line
    OUT_DIR/classes.txt                the suggested probe classes, largest first
    OUT_DIR/corpus.json                stamp: version + parameters + per-split counts

Usage::

    python examples/make_text_corpus.py OUT_DIR [--seed 1] [--num-classes 10]
        [--valid-fraction 0.1] [--test-fraction 0.1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

logger = logging.getLogger(__name__)

# Bump whenever the cleaning or the split changes the output, so stale corpora are rebuilt.
CORPUS_VERSION = 1
SPLITS = ("train", "valid", "test")
STAMP_NAME = "corpus.json"
MIN_WORDS = 5
MIN_PLAIN_FRACTION = 0.8

UNDERLINE = re.compile(r"^\s*([*=\-~^#])\1{2,}\s*$")
BULLET = re.compile(r"^\s*(\* |- |\d+\. |\(\d+\) )")
# A plain word: letters (with inner apostrophes/hyphens), optional quotes/brackets, punctuation.
PLAIN_WORD = re.compile(r"""^[("“‘'*]*[A-Za-z][A-Za-z’'\-]*[)"”’'*]*[.,;:!?]?[)"”’'*]*[.,;:!?]?$""")
# Candidate sentence ends: whitespace after . ! ? (or a closing quote/bracket), before a capital.
SENTENCE_GAP = re.compile(r"""(?<=[.!?)"”’])\s+(?=[("“‘]?[A-Z0-9])""")
ENDS_SENTENCE = re.compile(r"""[.!?][)"”’]?$""")
ABBREVIATIONS = {"e.g.", "i.e.", "etc.", "cf.", "vs.", "approx.", "Mr.", "Dr.", "No."}
EMPHASIS = re.compile(r"""(?<![\w"])\*\*?([A-Za-z][\w\s.,'’\-]*?)\*\*?(?![\w"])""")


def _paragraphs(text: str) -> Iterator[List[str]]:
    para: List[str] = []
    for line in text.splitlines():
        if line.strip():
            para.append(line)
        elif para:
            yield para
            para = []
    if para:
        yield para


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_markup_or_code(lines: Sequence[str]) -> bool:
    text = "\n".join(lines)
    if any(UNDERLINE.match(line) for line in lines):
        return True  # a heading, or a rule
    if ">>>" in text or "::=" in text or "(Pdb)" in text:
        return True  # doctest, grammar, debugger session
    return any(line.lstrip().startswith(("+-", "+=", "|")) for line in lines)  # a table


def _join_wrapped(lines: Sequence[str]) -> str:
    out = ""
    for line in lines:
        line = line.strip()
        if out.endswith("-") and len(out) > 1 and out[-2].isalpha() and line[:1].isalpha():
            out += line  # "built-" + "in": the rendering wraps only at real hyphens
        else:
            out = f"{out} {line}" if out else line
    return out


def _strip_markup(paragraph: str) -> str:
    paragraph = re.sub(r"\s*\[\d+\]", "", paragraph)  # footnote marks
    paragraph = EMPHASIS.sub(r"\1", paragraph)
    paragraph = BULLET.sub("", paragraph)
    return " ".join(paragraph.split())


def split_sentences(paragraph: str) -> List[str]:
    """Split at sentence ends, but not after abbreviations or single initials."""
    out, start = [], 0
    for gap in SENTENCE_GAP.finditer(paragraph):
        words = paragraph[start:gap.start()].split()
        last = words[-1] if words else ""
        if not ENDS_SENTENCE.search(last) or last in ABBREVIATIONS or re.fullmatch(r"[A-Z]\.", last):
            continue
        out.append(paragraph[start:gap.start()].strip())
        start = gap.end()
    out.append(paragraph[start:].strip())
    return [s for s in out if s]


def is_prose(sentence: str) -> bool:
    """Enough words, mostly plain ones (quoted inline code counts as one plain word)."""
    words = re.sub(r'"[^"]*"', "CODE", sentence).split()
    if len(words) < MIN_WORDS:
        return False
    return sum(bool(PLAIN_WORD.match(w)) for w in words) >= MIN_PLAIN_FRACTION * len(words)


def topic_sentences(text: str) -> List[str]:
    """The prose sentences of one topic, in reading order, without repeats."""
    sentences: List[str] = []
    intro = None  # the last prose paragraph: a literal block follows one ending in ":"
    for lines in _paragraphs(text):
        literal = (intro is not None and intro[-1].rstrip().endswith(":")
                   and _indent(lines[0]) > _indent(intro[0]) and not BULLET.match(lines[0]))
        if literal or _is_markup_or_code(lines):
            continue
        intro = lines
        sentences += [s for s in split_sentences(_strip_markup(_join_wrapped(lines))) if is_prose(s)]
    return list(dict.fromkeys(sentences))


def label_sentences(topics: Dict[str, str]) -> Dict[str, List[str]]:
    """topic -> its sentences, each sentence under the largest topic that contains it."""
    per_topic = {name: topic_sentences(topics[name]) for name in sorted(topics)}
    owner: Dict[str, str] = {}
    for name, sentences in per_topic.items():
        for s in sentences:
            if s not in owner or (len(topics[name]), name) > (len(topics[owner[s]]), owner[s]):
                owner[s] = name
    return {name: [s for s in sentences if owner[s] == name] for name, sentences in per_topic.items()
            if any(owner[s] == name for s in sentences)}


def split_topics(labelled: Dict[str, List[str]], seed: int, valid_fraction: float,
                 test_fraction: float) -> Dict[str, List[tuple]]:
    """split -> [(topic, sentence)] in document order, stratified by topic."""
    rng = random.Random(seed)
    splits: Dict[str, List[tuple]] = {s: [] for s in SPLITS}
    for topic in sorted(labelled):
        sentences = labelled[topic]
        order = list(range(len(sentences)))
        rng.shuffle(order)
        n_valid = round(len(sentences) * valid_fraction)
        n_test = round(len(sentences) * test_fraction)
        chosen = {"valid": set(order[:n_valid]), "test": set(order[n_valid:n_valid + n_test])}
        for i, s in enumerate(sentences):
            split = "valid" if i in chosen["valid"] else "test" if i in chosen["test"] else "train"
            splits[split].append((topic, s))
    return splits


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


def _load_complete_stamp(out_dir: Path, params: dict) -> dict | None:
    """The stored summary if OUT_DIR holds a finished corpus for `params`, else None."""
    try:
        data = json.loads((out_dir / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("version") != CORPUS_VERSION or data.get("params") != params:
        return None
    for split in SPLITS:
        for ext in ("txt", "label"):
            path = out_dir / f"{split}.{ext}"
            if not path.is_file() or _sha256(path) != data["splits"][split].get(f"sha256_{ext}"):
                return None
    return data if (out_dir / "classes.txt").is_file() else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_corpus(out_dir: str | os.PathLike, seed: int = 1, num_classes: int = 10,
                valid_fraction: float = 0.1, test_fraction: float = 0.1) -> dict:
    """Build (or reuse) the corpus in `out_dir` and return its summary (the stamp's content
    plus "cached" and "elapsed_seconds")."""
    from pydoc_data.topics import topics  # part of CPython's standard library

    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= fractions and valid + test < 1, got {valid_fraction}, {test_fraction}")
    if num_classes < 2:
        raise ValueError(f"--num-classes must be at least 2, got {num_classes}")
    out_dir = Path(out_dir)
    params = {"seed": seed, "num_classes": num_classes, "valid_fraction": valid_fraction,
              "test_fraction": test_fraction, "python": ".".join(map(str, sys.version_info[:3]))}
    start = time.perf_counter()
    stamped = _load_complete_stamp(out_dir, params)
    if stamped is not None:
        logger.info("%s already holds this corpus (stamp %s); skipping", out_dir, STAMP_NAME)
        return {**stamped, "cached": True, "elapsed_seconds": time.perf_counter() - start}

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STAMP_NAME).unlink(missing_ok=True)  # incomplete until rewritten
    labelled = label_sentences(topics)
    classes = sorted(labelled, key=lambda t: (-len(labelled[t]), t))[:num_classes]
    splits = split_topics(labelled, seed, valid_fraction, test_fraction)
    summary: dict = {"version": CORPUS_VERSION, "params": params, "classes": classes,
                     "topics": len(labelled), "splits": {}}
    for split, rows in splits.items():
        _write_lines(out_dir / f"{split}.txt", [s for _, s in rows])
        _write_lines(out_dir / f"{split}.label", [t for t, _ in rows])
        counts = Counter(t for t, _ in rows)
        summary["splits"][split] = {
            "lines": len(rows), "words": sum(len(s.split()) for _, s in rows),
            "class_lines": {c: counts[c] for c in classes},
            "sha256_txt": _sha256(out_dir / f"{split}.txt"),
            "sha256_label": _sha256(out_dir / f"{split}.label")}
    _write_lines(out_dir / "classes.txt", classes)
    stamp_tmp = out_dir / (STAMP_NAME + ".tmp")
    stamp_tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(stamp_tmp, out_dir / STAMP_NAME)  # written last: marks completeness
    elapsed = time.perf_counter() - start
    logger.info("wrote %d lines to %s in %.1f s", sum(len(r) for r in splits.values()), out_dir, elapsed)
    return {**summary, "cached": False, "elapsed_seconds": elapsed}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=1, help="seed of the train/valid/test split")
    parser.add_argument("--num-classes", type=int, default=10,
                        help="how many of the largest topics classes.txt lists (default 10)")
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s")

    summary = make_corpus(args.out_dir, args.seed, args.num_classes, args.valid_fraction,
                          args.test_fraction)
    state = "reused" if summary["cached"] else "generated"
    print(f"{state} text corpus in {args.out_dir} ({summary['elapsed_seconds']:.1f} s, "
          f"Python {summary['params']['python']} documentation, {summary['topics']} topics)")
    for split in SPLITS:
        s = summary["splits"][split]
        in_classes = sum(s["class_lines"].values())
        print(f"  {split:5s} {s['lines']:5d} lines {s['words']:6d} words "
              f"({in_classes} in the {len(summary['classes'])} probe classes)")
    print(f"  classes: {', '.join(summary['classes'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
