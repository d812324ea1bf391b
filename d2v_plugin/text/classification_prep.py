"""Labelled text -> the data of fairseq's ``sentence_prediction`` task (``d2v-text-classification-prep``).

Fine-tuning a text checkpoint for sentence classification (``config/finetuning/
tiny_text_classification.yaml``) reads the layout RoBERTa's GLUE recipe uses::

    OUT/input0/dict.txt                        the *pretraining* dictionary (a copy)
    OUT/input0/{train,valid,test}.{bin,idx}    sentences as BPE pieces, each ending in </s>
    OUT/label/dict.txt                         the classes, in order (class i = line i)
    OUT/label/{train,valid,test}.{bin,idx}     one class per sentence
    OUT/classification_prep.json               classes, counts per split, skipped lines

Example::

    d2v-text-classification-prep --corpus data/text/corpus --data-bin data/text/data-bin \\
        --out-dir data/text/topic-bin

``--corpus`` holds ``{split}.txt`` (one sentence per line, UTF-8) and ``{split}.label`` (its
class, line for line) for train and valid, test optional (``examples/make_text_corpus.py``
writes them). Sentences are encoded with the pretraining data-bin's sentencepiece model and
binarized with its ``dict.txt`` (fairseq-preprocess), so token ids are those the checkpoint
was pretrained with. The classes are ``--classes`` (a file, one per line), else the corpus'
``classes.txt``, else every label of train, sorted. Skipped, counted and reported: lines whose
label is not a class, and empty lines (nothing left after normalisation).
``--train-per-class N`` keeps a seeded sample of N training lines per class (valid and test
stay whole): a low-resource split to see what pretraining buys when labels are few. Characters the BPE
model never saw become ``<unk>`` (counted), as in ``d2v-text-prep``. A label file with a
different number of lines than its text is an error naming both files.
Re-running into an ``OUT`` that a fine-tuning is reading is safe: the data is built aside and
swapped in by rename (``OUT/.prep.lock`` serialises the swap); identical data is left as it is.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import random
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

from .. import console
from .bpe import PieceEncoder
from .prepare import CHUNK, EXAMPLES, SPLITS, SPM_NAME, TextPrepError, binarize, read_lines

logger = logging.getLogger(__name__)

SUMMARY_NAME = "classification_prep.json"


@dataclass
class LabelledSplitStats:
    split: str
    lines: int = 0            # lines read
    kept: int = 0             # sentences binarized
    other_label: int = 0      # label not among the classes: skipped
    empty: int = 0            # nothing to encode: skipped
    unk_chars: int = 0        # characters mapped to <unk> in kept lines
    tokens: int = 0           # pieces of kept lines (without </s>)
    class_counts: Dict[str, int] = field(default_factory=dict)
    empty_examples: List[int] = field(default_factory=list)


def read_class_list(path: str) -> List[str]:
    names = [text.strip() for _, text in read_lines(path) if text.strip()]
    if not names:
        raise TextPrepError(f"{path}: no class names")
    if len(set(names)) != len(names):
        raise TextPrepError(f"{path}: a class is listed twice")
    if any(len(n.split()) != 1 for n in names):
        raise TextPrepError(f"{path}: class names must not contain spaces")
    return names


def _paired_lines(corpus: str, split: str):
    text_path, label_path = (os.path.join(corpus, f"{split}.{ext}") for ext in ("txt", "label"))
    texts, labels = list(read_lines(text_path)), list(read_lines(label_path))
    if len(texts) != len(labels):
        raise TextPrepError(f"{text_path} has {len(texts)} lines but {label_path} has {len(labels)}: "
                            f"text and labels must match line for line")
    return text_path, [(number, text, label.strip()) for (number, text), (_, label) in zip(texts, labels)]


def sample_per_class(labels: Sequence[str], classes: Sequence[str], per_class: int, seed: int) -> set:
    """Indices of at most ``per_class`` lines of each class, drawn with ``random.Random(seed)``
    (a low-resource training split, like the 10-minute / 1-hour splits of speech)."""
    rng = random.Random(seed)
    by_class = {c: [i for i, label in enumerate(labels) if label == c] for c in classes}
    return {i for c in classes for i in rng.sample(by_class[c], min(per_class, len(by_class[c])))}


def encode_labelled_split(encoder: PieceEncoder, corpus: str, split: str, classes: Sequence[str],
                          text_out: str, label_out: str, per_class: Optional[int] = None,
                          seed: int = 1, show_progress: bool = False) -> LabelledSplitStats:
    """Write the kept sentences as pieces to ``text_out`` and their classes to ``label_out``
    (with ``per_class``: a seeded sample of at most that many lines of each class)."""
    text_path, rows = _paired_lines(corpus, split)
    wanted = set(classes)
    stats = LabelledSplitStats(split, lines=len(rows), class_counts={c: 0 for c in classes})
    if per_class is not None:
        chosen = sample_per_class([l for _, _, l in rows], classes, per_class, seed)
        rows = [row for i, row in enumerate(rows) if i in chosen]
        stats.lines = len(rows)
    labelled = [(n, t, l) for n, t, l in rows if l in wanted]
    stats.other_label = len(rows) - len(labelled)
    progress = console.Progress(f"encoding {split}", len(labelled), "sentences", enabled=show_progress)
    with open(text_out, "w", encoding="utf-8", newline="\n") as ft, \
            open(label_out, "w", encoding="utf-8", newline="\n") as fl, progress:
        encoded = _encode_in_chunks(encoder, [t for _, t, _ in labelled], progress)
        for enc, (number, _, label) in zip(encoded, labelled):  # encoded first: its last chunk counts
            if not enc.pieces:
                stats.empty += 1
                if len(stats.empty_examples) < EXAMPLES:
                    stats.empty_examples.append(number)
                continue
            ft.write(" ".join(enc.pieces) + "\n")
            fl.write(label + "\n")
            stats.kept += 1
            stats.tokens += len(enc.pieces)
            stats.unk_chars += enc.unk_chars
            stats.class_counts[label] += 1
    if stats.other_label:
        logger.info("%s: skipped %d line(s) whose label is not one of the %d classes", text_path,
                    stats.other_label, len(classes))
    if stats.empty:
        logger.warning("%s: skipped %d empty line(s), e.g. line(s) %s", text_path, stats.empty,
                       ", ".join(map(str, stats.empty_examples)))
    if stats.unk_chars:
        logger.warning("%s: %d character(s) are not in the BPE model and became <unk>", text_path,
                       stats.unk_chars)
    if stats.kept == 0:
        raise TextPrepError(f"{text_path}: no labelled sentence left (classes: {', '.join(classes)})")
    return stats


def _encode_in_chunks(encoder: PieceEncoder, texts: Sequence[str], progress: console.Progress):
    """``encoder.encode_many(texts)``, one sentencepiece call per CHUNK lines, advancing ``progress``."""
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start:start + CHUNK]
        yield from encoder.encode_many(chunk)
        progress.advance(len(chunk))


def write_label_dictionary(classes: Sequence[str], counts: Dict[str, int], path: str) -> None:
    """``dict.txt`` of the classes in the given order, so fairseq's label index i is class i."""
    with open(path, "w", encoding="utf-8") as f:
        for name in classes:
            f.write(f"{name} {max(counts.get(name, 0), 1)}\n")


def prepare_classification(corpus: str, data_bin: str, out_dir: str, classes_file: Optional[str] = None,
                           train_per_class: Optional[int] = None, seed: int = 1,
                           show_progress: bool = False) -> Dict:
    """Encode and binarize every split of ``corpus``; returns the summary written to the json.
    ``train_per_class`` keeps a seeded sample of that many training sentences per class.

    Built in a staging folder inside ``out_dir`` and published by rename, under a lock: a
    fine-tuning already reading ``out_dir`` never sees half-written files, and an ``out_dir``
    that already holds the same data is left untouched, so two jobs preparing one folder at
    once (``classification_benefit.py --inits``, one process per init) cannot corrupt it."""
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging.", dir=out_dir)
    try:
        summary = _build(corpus, data_bin, staging, classes_file, train_per_class, seed, show_progress)
        with open(os.path.join(out_dir, ".prep.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _publish(staging, out_dir, summary)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


PUBLISHED = ("input0", "label", "plain", SUMMARY_NAME)  # the summary last: it marks complete data


def _publish(staging: str, out_dir: str, summary: Dict) -> None:
    """Move the staged data into ``out_dir`` unless the same data is already there. Replaced
    entries go to the staging folder (deleted by the caller); open files stay readable."""
    try:
        with open(os.path.join(out_dir, SUMMARY_NAME), encoding="utf-8") as f:
            if json.load(f) == json.loads(json.dumps(summary)):
                logger.info("%s already holds this data: kept as it is", out_dir)
                return
    except (OSError, ValueError):
        pass
    for name in PUBLISHED:
        target = os.path.join(out_dir, name)
        if os.path.lexists(target):
            os.rename(target, os.path.join(staging, name + ".replaced"))
        os.rename(os.path.join(staging, name), target)


def _build(corpus: str, data_bin: str, out_dir: str, classes_file: Optional[str],
           train_per_class: Optional[int], seed: int, show_progress: bool = False) -> Dict:
    for name in (SPM_NAME + ".model", "dict.txt"):
        if not os.path.isfile(os.path.join(data_bin, name)):
            raise FileNotFoundError(f"{data_bin}/{name} not found: --data-bin must be the pretraining "
                                    f"data-bin written by d2v-text-prep")
    splits = [s for s in SPLITS if os.path.isfile(os.path.join(corpus, f"{s}.txt"))]
    for required in ("train", "valid"):
        if required not in splits:
            raise FileNotFoundError(f"{corpus}/{required}.txt not found")
    classes_file = classes_file or (os.path.join(corpus, "classes.txt")
                                    if os.path.isfile(os.path.join(corpus, "classes.txt")) else None)
    if classes_file:
        classes = read_class_list(classes_file)
    else:
        classes = sorted({label for _, _, label in _paired_lines(corpus, "train")[1] if label})

    encoder = PieceEncoder(os.path.join(data_bin, SPM_NAME + ".model"))
    plain = os.path.join(out_dir, "plain")
    for sub in ("input0", "label", "plain"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    stats, text_paths, label_paths = {}, {}, {}
    for split in splits:
        text_paths[split] = os.path.join(plain, f"{split}.input0")
        label_paths[split] = os.path.join(plain, f"{split}.label")
        stats[split] = encode_labelled_split(encoder, corpus, split, classes, text_paths[split],
                                             label_paths[split],
                                             train_per_class if split == "train" else None, seed,
                                             show_progress)

    input_dict = os.path.join(out_dir, "input0", "dict.txt")
    shutil.copyfile(os.path.join(data_bin, "dict.txt"), input_dict)
    label_dict = os.path.join(out_dir, "label", "dict.txt")
    write_label_dictionary(classes, stats["train"].class_counts, label_dict)
    binarize(text_paths, input_dict, os.path.join(out_dir, "input0"))
    binarize(label_paths, label_dict, os.path.join(out_dir, "label"))
    _check_binarized(out_dir, stats, classes)

    summary = {"num_classes": len(classes), "classes": classes, "data_bin": os.path.abspath(data_bin),
               "train_per_class": train_per_class, "seed": seed,
               "splits": {k: asdict(v) for k, v in stats.items()}}
    with open(os.path.join(out_dir, SUMMARY_NAME), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def _check_binarized(out_dir: str, stats: Dict[str, LabelledSplitStats], classes: Sequence[str]) -> None:
    """Reload what fairseq wrote: as many sentences as labels, labels inside the class range."""
    from fairseq.data import Dictionary, data_utils

    input_dict = Dictionary.load(os.path.join(out_dir, "input0", "dict.txt"))
    label_dict = Dictionary.load(os.path.join(out_dir, "label", "dict.txt"))
    for split, s in stats.items():
        text = data_utils.load_indexed_dataset(os.path.join(out_dir, "input0", split), input_dict)
        labels = data_utils.load_indexed_dataset(os.path.join(out_dir, "label", split), label_dict)
        if len(text) != s.kept or len(labels) != s.kept:
            raise RuntimeError(f"{out_dir}/{split}: {len(text)} sentences and {len(labels)} labels "
                               f"binarized, expected {s.kept}")
        first = labels[0][0].item() - label_dict.nspecial
        if not 0 <= first < len(classes):
            raise RuntimeError(f"{out_dir}/label/{split}: label index {first} outside the classes")


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    p = argparse.ArgumentParser(prog="d2v-text-classification-prep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="folder with {train,valid[,test]}.txt and .label")
    p.add_argument("--data-bin", required=True, help="the pretraining data-bin (spm.model, dict.txt)")
    p.add_argument("--out-dir", required=True, help="writes OUT/input0, OUT/label (task.data)")
    p.add_argument("--classes", help="file with the class names, one per line (default: "
                                     "CORPUS/classes.txt, else every train label)")
    p.add_argument("--train-per-class", type=int,
                   help="keep only this many training sentences per class (seeded sample): a low-resource split")
    p.add_argument("--seed", type=int, default=1, help="seed of that sample")
    p.add_argument("--log-level", default="INFO", help="logging level of the command (console script)")
    args = p.parse_args(argv)
    summary = prepare_classification(args.corpus, args.data_bin, args.out_dir, args.classes,
                                     args.train_per_class, args.seed, show_progress=True)
    for split, s in summary["splits"].items():
        print(f"  {split:5s} {s['kept']:7d} sentences  skipped: other label {s['other_label']}, "
              f"empty {s['empty']}  <unk> chars {s['unk_chars']}")
    print(f"{summary['num_classes']} classes; fine-tune with task.data={args.out_dir} "
          f"task.num_classes={summary['num_classes']}")
    return summary


def cli() -> int:
    return console.run(main, "d2v-text-classification-prep")


if __name__ == "__main__":
    sys.exit(cli())
