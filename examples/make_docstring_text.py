#!/usr/bin/env python3
"""More unlabelled English for text pretraining, without a download: the docstrings of
CPython's standard library, cleaned into sentences the way ``make_text_corpus.py`` cleans the
documentation topics.

Why: the topic corpus has ~50k training tokens, which a masked-prediction objective goes
over hundreds of times in a few thousand updates. The stdlib docstrings are in-domain (they
document the same language) and several times larger. Sentences that occur in ``--exclude``
files (the valid/test text of the topic corpus) are dropped, so fine-tuning evaluation never
sees a sentence the model was pretrained on.

Usage::

    python examples/make_docstring_text.py data/text/docstrings \\
        --exclude data/text/corpus/valid.txt data/text/corpus/test.txt
    cat data/text/corpus/train.txt data/text/docstrings/unlabelled.txt > data/text/pretrain.txt
    d2v-text-prep --train data/text/pretrain.txt --valid data/text/corpus/valid.txt \\
        --test data/text/corpus/test.txt --out-dir data/text/big

Writes ``OUT/unlabelled.txt`` (one sentence per line, sorted by module path, deduplicated)
and ``OUT/docstrings.json`` (counts, Python version).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import sysconfig
from pathlib import Path
from typing import Iterator, List, Sequence

from make_text_corpus import topic_sentences

SKIPPED_PARTS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "__pycache__"}


def stdlib_files() -> List[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if not SKIPPED_PARTS & set(p.relative_to(root).parts))


def docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def make_docstring_text(out: Path, exclude: Sequence[Path] = ()) -> dict:
    excluded = {line.strip() for path in exclude for line in path.read_text(encoding="utf-8").splitlines()}
    seen, lines, dropped = set(), [], 0
    files = stdlib_files()
    for path in files:
        for doc in docstrings(path):
            for sentence in topic_sentences(doc):
                if sentence in excluded:
                    dropped += 1
                elif sentence not in seen:
                    seen.add(sentence)
                    lines.append(sentence)
    out.mkdir(parents=True, exist_ok=True)
    (out / "unlabelled.txt").write_text("".join(s + "\n" for s in lines), encoding="utf-8")
    summary = {"python": sys.version.split()[0], "files": len(files), "sentences": len(lines),
               "words": sum(len(s.split()) for s in lines), "dropped_as_in_exclude": dropped}
    (out / "docstrings.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--exclude", type=Path, nargs="*", default=[],
                   help="text files whose lines must not appear (valid/test of the labelled corpus)")
    args = p.parse_args(argv)
    summary = make_docstring_text(args.out, args.exclude)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
