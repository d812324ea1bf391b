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

A labelled task from the same text (which stdlib package a sentence documents; valid and
test hold ~1200 sentences each, ~7x the topic corpus's), for fine-tuning comparisons::

    python examples/make_docstring_text.py data/text/modules --module-task
    d2v-text-prep --train data/text/modules/train.txt --valid data/text/modules/valid.txt \\
        --test data/text/modules/test.txt --out-dir data/text/modules-bin

``--site-packages`` adds the docstrings of every package installed next to this Python
(the project's venv: torch, scipy, sympy, sklearn, numpy, ... about 1.7M words, ~10x the
stdlib's). That text depends on what is installed; ``docstrings.json`` records the words per
package.

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
from typing import Dict, Iterator, List, Sequence, Tuple

from make_text_corpus import SPLITS, _write_lines, split_topics, topic_sentences

SKIPPED_PARTS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "__pycache__"}


def python_files(root: Path, skipped=SKIPPED_PARTS) -> List[Path]:
    return sorted(p for p in root.rglob("*.py") if not skipped & set(p.relative_to(root).parts))


def stdlib_files() -> List[Path]:
    return python_files(Path(sysconfig.get_paths()["stdlib"]))


def site_packages_roots() -> List[Path]:
    """Where this Python's installed packages live (purelib and platlib, usually one folder)."""
    return sorted({Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")})


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


def package_sentences(root: Path, paths: Sequence[Path]) -> Iterator[Tuple[str, str]]:
    """(top-level package or module under ``root``, sentence) for every prose sentence of the
    docstrings in ``paths``, in order (repeats included: callers deduplicate)."""
    for path in paths:
        package = path.relative_to(root).parts[0].removesuffix(".py")
        for doc in docstrings(path):
            for sentence in topic_sentences(doc):
                yield package, sentence


def module_sentences() -> Dict[str, List[str]]:
    """stdlib top-level module or package -> its docstring sentences (each sentence once, under
    the first module, in path order, that has it)."""
    seen, labelled = set(), {}
    for module, sentence in package_sentences(Path(sysconfig.get_paths()["stdlib"]), stdlib_files()):
        if sentence not in seen:
            seen.add(sentence)
            labelled.setdefault(module, []).append(sentence)
    return labelled


def make_module_task(out: Path, num_classes: int = 10, seed: int = 1, valid_fraction: float = 0.2,
                     test_fraction: float = 0.2) -> dict:
    """A labelled corpus in ``make_text_corpus.py``'s layout: which stdlib package does a
    docstring sentence come from? Per module, a seeded stratified split; ``train.txt`` keeps
    the sentences of *every* module (pretraining text), ``classes.txt`` the ``num_classes``
    largest modules (the ones fine-tuning keeps). Its valid/test sets are several times larger
    than the topic corpus's, so a 1-2 point difference between two models is measurable."""
    labelled = module_sentences()
    classes = sorted(labelled, key=lambda m: (-len(labelled[m]), m))[:num_classes]
    splits = split_topics(labelled, seed, valid_fraction, test_fraction)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"python": sys.version.split()[0], "classes": classes, "modules": len(labelled),
               "seed": seed, "splits": {}}
    for split in SPLITS:
        rows = splits[split]
        _write_lines(out / f"{split}.txt", [s for _, s in rows])
        _write_lines(out / f"{split}.label", [m for m, _ in rows])
        summary["splits"][split] = {"lines": len(rows),
                                    "in_classes": sum(m in classes for m, _ in rows)}
    _write_lines(out / "classes.txt", classes)
    (out / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def make_docstring_text(out: Path, exclude: Sequence[Path] = (), site_packages: bool = False) -> dict:
    """Unlabelled sentences (stdlib, then optionally the installed packages), each once, none
    that occurs in ``exclude``; words counted per source (``stdlib`` or the package's name)."""
    excluded = {line.strip() for path in exclude for line in path.read_text(encoding="utf-8").splitlines()}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    roots = [("stdlib", stdlib, python_files(stdlib))]
    if site_packages:  # tests are skipped there too; "site-packages" is the root itself
        roots += [("site-packages", root, python_files(root, SKIPPED_PARTS - {"site-packages"}))
                  for root in site_packages_roots()]
    seen, lines, dropped, words = set(), [], 0, {}
    for source, root, paths in roots:
        for package, sentence in package_sentences(root, paths):
            if sentence in excluded:
                dropped += 1
            elif sentence not in seen:
                seen.add(sentence)
                lines.append(sentence)
                key = source if source == "stdlib" else package
                words[key] = words.get(key, 0) + len(sentence.split())
    out.mkdir(parents=True, exist_ok=True)
    (out / "unlabelled.txt").write_text("".join(s + "\n" for s in lines), encoding="utf-8")
    summary = {"python": sys.version.split()[0], "files": sum(len(paths) for _, _, paths in roots),
               "sentences": len(lines), "words": sum(words.values()), "dropped_as_in_exclude": dropped,
               "words_per_source": dict(sorted(words.items(), key=lambda kv: -kv[1]))}
    (out / "docstrings.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--exclude", type=Path, nargs="*", default=[],
                   help="text files whose lines must not appear (valid/test of the labelled corpus)")
    p.add_argument("--site-packages", action="store_true",
                   help="also the docstrings of the installed packages (~10x more text)")
    p.add_argument("--module-task", action="store_true",
                   help="write a labelled corpus instead (label = stdlib module; see make_module_task)")
    p.add_argument("--num-classes", type=int, default=10, help="--module-task: the largest N modules")
    p.add_argument("--seed", type=int, default=1, help="--module-task: seed of the split")
    args = p.parse_args(argv)
    if args.module_task:
        if args.exclude or args.site_packages:
            p.error("--exclude and --site-packages make unlabelled text; --module-task is the labelled stdlib task")
        summary = make_module_task(args.out, args.num_classes, args.seed)
    else:
        summary = make_docstring_text(args.out, args.exclude, args.site_packages)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
