"""Raw text -> sentencepiece BPE -> fairseq binary data for text pretraining (``d2v-text-prep``).

Examples::

    d2v-text-prep --train corpus/train.txt --valid corpus/valid.txt --test corpus/test.txt \\
        --out-dir data/text
    python -m d2v_plugin.text.prepare --train train.txt --valid valid.txt --out-dir out \\
        --vocab-size 8000

Input: UTF-8 text files, one sentence or paragraph per line (``--test`` is optional).
Blank lines, and lines that hold nothing after sentencepiece's normalisation (control
characters only), are skipped with a warning giving their count and first line numbers: they
carry no tokens, and the binary data keeps no document boundaries. A byte sequence that is
not UTF-8 is an error naming the file and line.

Steps:

1. a BPE model is trained on the training text only (``--vocab-size``, default 2000, suits
   corpora of a few MB; ``character_coverage`` 1.0, so every character of the training text
   is in the model; at most ``--max-train-lines`` lines, sampled with ``--seed``);
2. every split is encoded into pieces (``OUT/bpe/<split>.bpe``, space-separated). A
   character the model has never seen becomes ``<unk>`` (one per run of such characters),
   counted per split and reported: lines with ``<unk>`` and characters mapped to it. With
   ``--byte-fallback`` such characters are spelled as UTF-8 byte pieces instead (no
   ``<unk>``, but 256 of the vocabulary's entries are the byte pieces);
3. ``dict.txt`` lists every piece of the model (``PIECE COUNT``, count = occurrences in the
   encoded training text, most frequent first), so a piece seen only in valid/test is never
   ``<unk>``. It holds no ``<mask>``: like fairseq's ``masked_lm`` task, the loader adds it
   (``d2v_plugin.data.text_dataset.load_text_dictionary``), which makes the indices those of
   the reference (``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3, pieces, ``<mask>``);
4. fairseq's own ``fairseq-preprocess --only-source --srcdict dict.txt --dataset-impl mmap``
   binarizes the pieces; each line ends with ``</s>``.

Output (``--out-dir``)::

    OUT/data-bin/dict.txt                      fairseq dictionary (no <mask>)
    OUT/data-bin/{train,valid,test}.{bin,idx}  mmap indexed datasets, one entry per kept line
    OUT/data-bin/spm.model, spm.vocab          the sentencepiece model (encode new text with it)
    OUT/data-bin/text_prep.json                counts per split, the options used
    OUT/data-bin/preprocess.log                fairseq-preprocess's log
    OUT/bpe/<split>.bpe                        the encoded text fairseq binarized

``OUT/data-bin`` is what ``task.data`` points to; fairseq's ``masked_lm`` task loads it too.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .. import console
from .bpe import UNK, PieceEncoder, train_bpe

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SPM_NAME = "spm"  # -> spm.model, spm.vocab in data-bin
SUMMARY_NAME = "text_prep.json"
EXAMPLES = 5      # line numbers quoted in warnings
CHUNK = 4096      # lines encoded per sentencepiece call


class TextPrepError(console.UserInputError):
    """Text that cannot be prepared: not UTF-8, nothing to train on, a vocabulary too large."""


@dataclass
class SplitStats:
    split: str
    source: str
    lines: int = 0           # lines read
    kept: int = 0            # lines binarized
    empty: int = 0           # blank, or no tokens after normalisation: skipped
    unk_lines: int = 0       # kept lines with at least one <unk>
    unk_chars: int = 0       # input characters mapped to <unk>
    tokens: int = 0          # pieces, without the </s> each line gets
    empty_examples: List[int] = field(default_factory=list)   # first skipped line numbers
    unk_examples: List[int] = field(default_factory=list)     # first line numbers with <unk>


@dataclass
class PrepResult:
    data_bin: str
    dict_path: str
    spm_model: str
    dictionary_size: int     # len(Dictionary.load(dict.txt)): specials + pieces, no <mask>
    splits: Dict[str, SplitStats]


def read_lines(path: str) -> Iterator[Tuple[int, str]]:
    """(1-based line number, text without the newline); TextPrepError for non-UTF-8 lines."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise TextPrepError(f"{path}:{number}: not UTF-8 text ({e.reason} at byte "
                                    f"{e.start} of the line)") from None


def _training_lines(path: str) -> Iterator[str]:
    return (text for _, text in read_lines(path) if text.strip())


def check_training_text(path: str) -> int:
    """Number of non-blank lines; TextPrepError when there are none."""
    lines = sum(1 for _ in _training_lines(path))
    if lines == 0:
        raise TextPrepError(f"{path}: the training text is empty (no non-blank lines): "
                            f"nothing to train the BPE model on")
    return lines


def count_lines(path: str) -> int:
    """Newline-terminated lines plus a last unterminated one, counted in binary (fast)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def encode_split(encoder: PieceEncoder, split: str, source: str, bpe_path: str,
                 counts: Optional[Counter] = None, show_progress: bool = False) -> SplitStats:
    """Write ``source`` as space-separated pieces to ``bpe_path``, one kept line per line."""
    stats = SplitStats(split, source)
    progress = console.Progress(f"encoding {split}", count_lines(source) if show_progress else None,
                                "lines", enabled=show_progress)

    def flush(chunk: List[Tuple[int, str]], out) -> None:
        for (number, _), enc in zip(chunk, encoder.encode_many([t for _, t in chunk])):
            if not enc.pieces:
                stats.empty += 1
                if len(stats.empty_examples) < EXAMPLES:
                    stats.empty_examples.append(number)
                continue
            stats.kept += 1
            stats.tokens += len(enc.pieces)
            if enc.unk_pieces:
                stats.unk_lines += 1
                stats.unk_chars += enc.unk_chars
                if len(stats.unk_examples) < EXAMPLES:
                    stats.unk_examples.append(number)
            if counts is not None:
                counts.update(enc.pieces)
            out.write(" ".join(enc.pieces) + "\n")

    with open(bpe_path, "w", encoding="utf-8", newline="\n") as out, progress:
        chunk: List[Tuple[int, str]] = []
        for number, text in read_lines(source):
            stats.lines += 1
            chunk.append((number, text))
            if len(chunk) == CHUNK:
                flush(chunk, out)
                progress.advance(len(chunk))
                chunk = []
        flush(chunk, out)
        progress.advance(len(chunk))
    _report(stats)
    return stats


def _report(s: SplitStats) -> None:
    if s.empty:
        logger.warning("%s: skipped %d empty line(s) (blank, or nothing left after normalisation), "
                       "e.g. line(s) %s", s.source, s.empty, ", ".join(map(str, s.empty_examples)))
    if s.unk_chars:
        logger.warning("%s: %d character(s) in %d line(s) are not in the BPE model and became %s, "
                       "e.g. line(s) %s", s.source, s.unk_chars, s.unk_lines, UNK,
                       ", ".join(map(str, s.unk_examples)))
    if s.kept == 0:
        logger.warning("%s: no text left for the %s split", s.source, s.split)


def write_dictionary(encoder: PieceEncoder, counts: Counter, path: str) -> int:
    """dict.txt with every piece of the model, most frequent in training first; returns the
    dictionary size (fairseq's 4 specials included)."""
    from fairseq.data import Dictionary

    vocab = encoder.vocabulary()
    order = sorted(range(len(vocab)), key=lambda i: (-counts[vocab[i]], i))  # ties: model order
    dictionary = Dictionary()
    for i in order:
        dictionary.add_symbol(vocab[i], n=counts[vocab[i]])
    dictionary.save(path)
    return len(dictionary)


def binarize(bpe_paths: Dict[str, str], dict_path: str, dest: str, workers: int = 1) -> None:
    """fairseq-preprocess --only-source --srcdict DICT --dataset-impl mmap, in this process."""
    from fairseq import options
    from fairseq_cli import preprocess

    argv = ["--only-source", "--srcdict", dict_path, "--destdir", dest, "--dataset-impl", "mmap",
            "--workers", str(workers), "--trainpref", bpe_paths["train"]]
    for split in ("valid", "test"):
        if split in bpe_paths:
            argv += [f"--{split}pref", bpe_paths[split]]
    args = options.get_preprocessing_parser().parse_args(argv)
    before = set(preprocess.logger.handlers)
    try:
        preprocess.main(args)
    finally:  # preprocess.main adds a log-file handler on every call
        for handler in set(preprocess.logger.handlers) - before:
            preprocess.logger.removeHandler(handler)
            handler.close()


def check_binarized(dest: str, stats: Dict[str, SplitStats], dict_path: str) -> None:
    """Reload each split the way the data pipeline does and compare line and <unk> counts."""
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(dict_path)
    for split, s in stats.items():
        data = data_utils.load_indexed_dataset(os.path.join(dest, split), dictionary)
        if data is None or len(data) != s.kept:
            raise RuntimeError(f"{dest}/{split}: fairseq wrote {0 if data is None else len(data)} "
                               f"lines, expected {s.kept}")
        if len(data) and int(data.sizes.sum()) != s.tokens + s.kept:
            raise RuntimeError(f"{dest}/{split}: {int(data.sizes.sum())} tokens, expected "
                               f"{s.tokens + s.kept} (pieces + one </s> per line)")


def prepare_text(train: str, valid: str, out_dir: str, test: Optional[str] = None,
                 vocab_size: int = 2000, byte_fallback: bool = False, workers: int = 1,
                 max_train_lines: int = 10_000_000, seed: int = 1,
                 show_progress: bool = False) -> PrepResult:
    """Train the BPE model, encode and binarize every split; see the module docstring
    (``show_progress``: a live progress line on stderr while encoding)."""
    import sentencepiece as spm

    sources = {"train": train, "valid": valid, **({"test": test} if test else {})}
    for split, path in sources.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{split} text not found: {path}")
    if vocab_size < 8:
        raise TextPrepError(f"--vocab-size must be at least 8, got {vocab_size}")
    train_lines = check_training_text(train)

    data_bin, bpe_dir = os.path.join(out_dir, "data-bin"), os.path.join(out_dir, "bpe")
    os.makedirs(data_bin, exist_ok=True)
    os.makedirs(bpe_dir, exist_ok=True)
    spm.set_random_generator_seed(seed)
    logger.info("training a %d-piece BPE model on %s (%d lines)", vocab_size, train, train_lines)
    try:
        model = train_bpe(_training_lines(train), os.path.join(data_bin, SPM_NAME), vocab_size,
                          byte_fallback, threads=workers, max_lines=max_train_lines)
    except RuntimeError as e:
        if "Vocabulary size too high" in str(e) or "vocab_size" in str(e):
            raise TextPrepError(f"--vocab-size {vocab_size} is too large for {train}: "
                                f"sentencepiece says: {str(e).split('] ')[-1]}") from None
        raise
    encoder = PieceEncoder(model)

    counts: Counter = Counter()
    stats, bpe_paths = {}, {}
    for split, path in sources.items():
        bpe_paths[split] = os.path.join(bpe_dir, f"{split}.bpe")
        stats[split] = encode_split(encoder, split, path, bpe_paths[split],
                                    counts if split == "train" else None, show_progress)
    dict_path = os.path.join(data_bin, "dict.txt")
    size = write_dictionary(encoder, counts, dict_path)
    for split in set(SPLITS) - set(sources):  # from an earlier run: would not match dict.txt
        for path in (os.path.join(data_bin, f"{split}.{ext}") for ext in ("bin", "idx")):
            if os.path.exists(path):
                logger.warning("removing %s from an earlier run (no --%s given)", path, split)
                os.remove(path)
    binarize(bpe_paths, dict_path, data_bin, workers)
    check_binarized(data_bin, stats, dict_path)

    result = PrepResult(data_bin, dict_path, model, size, stats)
    summary = {"options": {"vocab_size": vocab_size, "byte_fallback": byte_fallback,
                           "max_train_lines": max_train_lines, "seed": seed},
               "dictionary_size": size, "splits": {k: asdict(v) for k, v in stats.items()}}
    with open(os.path.join(data_bin, SUMMARY_NAME), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    return result


def main(argv: Optional[Sequence[str]] = None) -> PrepResult:
    p = argparse.ArgumentParser(prog="d2v-text-prep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="training text (also trains the BPE model)")
    p.add_argument("--valid", required=True, help="validation text")
    p.add_argument("--test", help="test text (optional)")
    p.add_argument("--out-dir", required=True, help="writes OUT/data-bin and OUT/bpe")
    p.add_argument("--vocab-size", type=int, default=2000,
                   help="BPE pieces incl. sentencepiece's <unk>, <s>, </s> (default 2000)")
    p.add_argument("--byte-fallback", action="store_true",
                   help="spell unseen characters as UTF-8 byte pieces instead of <unk>")
    p.add_argument("--max-train-lines", type=int, default=10_000_000,
                   help="BPE training samples at most this many lines (default 10M)")
    p.add_argument("--seed", type=int, default=1, help="seed of that sample")
    p.add_argument("--workers", type=int, default=1, help="processes for fairseq's binarizer")
    p.add_argument("--log-level", default="INFO", help="logging level of the command (console script)")
    args = p.parse_args(argv)
    result = prepare_text(args.train, args.valid, args.out_dir, args.test, args.vocab_size,
                          args.byte_fallback, args.workers, args.max_train_lines, args.seed,
                          show_progress=True)
    print(f"dictionary: {result.dict_path} ({result.dictionary_size} symbols + <mask> at load)")
    for s in result.splits.values():
        print(f"  {s.split:5s} {s.kept:8d} lines {s.tokens:10d} pieces  skipped empty {s.empty:5d}  "
              f"<unk>: {s.unk_chars} chars in {s.unk_lines} lines")
    print(f"data-bin: {result.data_bin}")
    return result


def cli() -> int:
    return console.run(main, "d2v-text-prep")


if __name__ == "__main__":
    sys.exit(cli())
