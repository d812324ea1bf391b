"""Transcripts -> letter CTC labels for a manifest split (``d2v-labels``).

Examples::

    # transcripts in one file; writes train.wrd, train.ltr and dict.ltr.txt next to train.tsv
    d2v-labels manifests/train.tsv --transcripts transcripts.txt
    # a .txt beside each audio file (a/b/utt1.flac -> a/b/utt1.txt), existing dictionary
    d2v-labels manifests/valid.tsv --dict manifests/dict.ltr.txt
    # only check that <split>.tsv/.wrd/.ltr line up and use the dictionary's symbols
    d2v-labels manifests/valid.tsv --check

Transcript sources (exactly one is used):

* ``--transcripts FILE``: lines ``<key><TAB or whitespace><text>``. If a line has a TAB the
  key ends at the first TAB, otherwise at the first whitespace. The key is either the audio
  path relative to the manifest root as written in the manifest (``train/utt1.wav``), that
  path without its extension (``train/utt1``), or the utterance id = file name without
  extension (``utt1``, LibriSpeech ``*.trans.txt`` style). Keys must be unique; an id that
  matches two audio files is an error. Lines for audio not in the manifest are ignored
  (counted in the log), so one file may serve all splits.
* otherwise: ``<audio path without extension>.txt`` beside each audio file, holding the text.

Normalisation: upper-cased, whitespace collapsed; nothing is removed. Every character must
be in the alphabet (``--alphabet``, default ``A-Z`` and ``'``) -- or, with ``--dict``, be a
symbol of that dictionary; anything else is an error naming the character and utterance.

Output (in ``--out-dir``, default the manifest's folder; ``<split>`` = manifest file stem):

* ``<split>.wrd``: the normalised words, one utterance per line, manifest order;
* ``<split>.ltr``: letters separated by spaces with ``|`` after each word;
* ``dict.ltr.txt`` (only without ``--dict``): ``SYMBOL COUNT`` lines counted over this split,
  most frequent first -- make it from the train split and pass it with ``--dict`` for the
  others, so all splits share one symbol table.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..data.manifest import ManifestError, read_manifest
from .. import console

logger = logging.getLogger(__name__)

DEFAULT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
WORD_BOUNDARY = "|"


class LabelError(console.UserInputError):
    """Missing or unusable transcripts, or labels that do not line up with the manifest."""


@dataclass(frozen=True)
class Utterance:
    rel_path: str   # as written in the manifest
    line: int       # 1-based manifest line


@dataclass
class LabelResult:
    wrd: str
    ltr: str
    dict_path: Optional[str]   # written dictionary, None when --dict was given
    utterances: int


def read_manifest_paths(tsv: str) -> Tuple[str, List[Utterance]]:
    """(root, utterances) of a manifest, read and checked by the data pipeline's own reader."""
    try:
        manifest = read_manifest(tsv)
    except ManifestError as e:
        raise LabelError(str(e)) from None
    return manifest.root, [Utterance(e.relative_path, e.line) for e in manifest.entries]


def _stem(rel_path: str) -> str:
    return os.path.splitext(rel_path)[0]


def read_transcripts_file(path: str) -> Dict[str, Tuple[str, int]]:
    """key -> (text, line number) from ``<key><TAB or space><text>`` lines."""
    table: Dict[str, Tuple[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, _, text = line.partition("\t") if "\t" in line else line.strip().partition(" ")
            key = key.strip()
            if key in table:
                raise LabelError(f"{path}:{number}: duplicate transcript key {key!r} "
                                 f"(first on line {table[key][1]})")
            table[key] = (text, number)
    return table


def transcripts_from_file(utts: Sequence[Utterance], tsv: str, path: str) -> List[str]:
    """One raw text per utterance, looked up by relative path, path stem, or file-name id."""
    table = read_transcripts_file(path)
    by_id: Dict[str, List[Utterance]] = {}
    for u in utts:
        by_id.setdefault(os.path.basename(_stem(u.rel_path)), []).append(u)
    texts, used = [], set()
    for u in utts:
        utt_id = os.path.basename(_stem(u.rel_path))
        for key in (u.rel_path, _stem(u.rel_path), utt_id):
            if key in table:
                if key == utt_id and len(by_id[utt_id]) > 1:
                    others = ", ".join(o.rel_path for o in by_id[utt_id])
                    raise LabelError(f"{path}: utterance id {utt_id!r} is ambiguous, it names "
                                     f"{others}: key the transcripts by relative path")
                texts.append(table[key][0])
                used.add(key)
                break
        else:
            raise LabelError(f"no transcript for {u.rel_path} ({tsv}:{u.line}) in {path} "
                             f"(tried keys {u.rel_path!r}, {_stem(u.rel_path)!r}, {utt_id!r})")
    unused = len(table) - len(used)
    if unused:
        logger.info("%s: %d transcripts are for audio not in %s (ignored)", path, unused, tsv)
    return texts


def transcripts_beside_audio(utts: Sequence[Utterance], tsv: str, root: str) -> List[str]:
    """One raw text per utterance from ``<audio without extension>.txt``."""
    texts = []
    for u in utts:
        txt = os.path.join(root, _stem(u.rel_path) + ".txt")
        if not os.path.isfile(txt):
            raise LabelError(f"no transcript for {u.rel_path} ({tsv}:{u.line}): expected {txt} "
                             f"(or pass --transcripts FILE)")
        with open(txt, encoding="utf-8") as f:
            texts.append(f.read())
    return texts


def normalize(text: str) -> str:
    """Upper-case, single spaces."""
    return " ".join(text.upper().split())


def words_to_letters(words: str) -> str:
    """``"HI YOU"`` -> ``"H I | Y O U |"``."""
    return " ".join(c for w in words.split() for c in [*w, WORD_BOUNDARY])


def check_characters(words: Sequence[str], utts: Sequence[Utterance], tsv: str,
                     allowed: Set[str], source: str) -> None:
    """Raise LabelError for the first character outside ``allowed`` or an empty transcript."""
    for text, u in zip(words, utts):
        if not text:
            raise LabelError(f"empty transcript for {u.rel_path} ({tsv}:{u.line})")
        for ch in text:
            if ch != " " and ch not in allowed:
                raise LabelError(f"character {ch!r} (U+{ord(ch):04X}) in the transcript of "
                                 f"{u.rel_path} ({tsv}:{u.line}) is not in {source}: {text!r}")


def read_dict(path: str) -> List[str]:
    """Symbols of a fairseq ``dict.ltr.txt`` (``SYMBOL COUNT`` lines)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dictionary not found: {path}")
    with open(path, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def write_dict(path: str, ltr_lines: Sequence[str]) -> None:
    counts = Counter(tok for line in ltr_lines for tok in line.split())
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{sym} {n}\n" for sym, n in ordered)


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)


def split_name(tsv: str) -> str:
    return os.path.splitext(os.path.basename(tsv))[0]


def prepare_labels(tsv: str, out_dir: Optional[str] = None, transcripts: Optional[str] = None,
                   dict_path: Optional[str] = None,
                   alphabet: str = DEFAULT_ALPHABET) -> LabelResult:
    """Write ``<split>.wrd``, ``<split>.ltr`` (and ``dict.ltr.txt`` without ``dict_path``)."""
    root, utts = read_manifest_paths(tsv)
    if not utts:
        raise LabelError(f"{tsv}: no utterances")
    out_dir = out_dir or os.path.dirname(os.path.abspath(tsv))
    split = split_name(tsv)
    raw = (transcripts_from_file(utts, tsv, transcripts) if transcripts
           else transcripts_beside_audio(utts, tsv, root))
    words = [normalize(t) for t in raw]
    if dict_path:
        symbols = set(read_dict(dict_path)) - {WORD_BOUNDARY}
        check_characters(words, utts, tsv, symbols, f"the dictionary {dict_path}")
    else:
        check_characters(words, utts, tsv, set(alphabet.upper()), f"the alphabet {alphabet!r}")
    letters = [words_to_letters(w) for w in words]
    os.makedirs(out_dir, exist_ok=True)
    wrd, ltr = os.path.join(out_dir, f"{split}.wrd"), os.path.join(out_dir, f"{split}.ltr")
    _write_lines(wrd, words)
    _write_lines(ltr, letters)
    written_dict = None
    if not dict_path:
        written_dict = os.path.join(out_dir, "dict.ltr.txt")
        if os.path.exists(written_dict):
            logger.warning("overwriting %s with the symbol counts of %s", written_dict, split)
        write_dict(written_dict, letters)
    logger.info("wrote %s and %s (%d utterances)", wrd, ltr, len(utts))
    return LabelResult(wrd, ltr, written_dict, len(utts))


def check_labels(tsv: str, label_dir: Optional[str] = None, dict_path: Optional[str] = None) -> int:
    """Raise LabelError unless ``<split>.wrd``/``.ltr`` have one line per manifest utterance
    and every ``.ltr`` symbol is in the dictionary; returns the utterance count."""
    _, utts = read_manifest_paths(tsv)
    label_dir = label_dir or os.path.dirname(os.path.abspath(tsv))
    split = split_name(tsv)
    dict_path = dict_path or os.path.join(label_dir, "dict.ltr.txt")
    for ext in ("wrd", "ltr"):
        path = os.path.join(label_dir, f"{split}.{ext}")
        if not os.path.isfile(path):
            if ext == "wrd":
                continue  # fine-tuning needs only the .ltr
            raise FileNotFoundError(f"labels not found: {path}")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        if len(lines) != len(utts):
            raise LabelError(f"{path} has {len(lines)} lines but {tsv} lists {len(utts)} "
                             f"utterances: labels and manifest must match line for line")
        if ext == "ltr":
            symbols = set(read_dict(dict_path))
            for u, line in zip(utts, lines):
                for tok in line.split():
                    if tok not in symbols:
                        raise LabelError(f"symbol {tok!r} in {path} for {u.rel_path} ({tsv}:"
                                         f"{u.line}) is not in the dictionary {dict_path}")
    return len(utts)


def main(argv: Optional[Sequence[str]] = None):
    p = argparse.ArgumentParser(prog="d2v-labels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", help="<split>.tsv")
    p.add_argument("--transcripts", help="file of '<key> <text>' lines (default: .txt beside audio)")
    p.add_argument("--out-dir", help="default: the manifest's folder")
    p.add_argument("--dict", dest="dict_path", help="existing dict.ltr.txt (valid/test splits)")
    p.add_argument("--alphabet", default=DEFAULT_ALPHABET, help="allowed characters without --dict")
    p.add_argument("--check", action="store_true", help="only check existing labels against the manifest")
    p.add_argument("--log-level", default="INFO", help="logging level of the command (console script)")
    args = p.parse_args(argv)
    if args.check:
        n = check_labels(args.manifest, args.out_dir, args.dict_path)
        print(f"{args.manifest}: labels OK ({n} utterances)")
        return n
    result = prepare_labels(args.manifest, args.out_dir, args.transcripts, args.dict_path,
                            args.alphabet)
    print(f"{result.utterances} utterances -> {result.wrd}, {result.ltr}"
          + (f", {result.dict_path}" if result.dict_path else ""))
    return result


def cli() -> int:
    return console.run(main, "d2v-labels")


if __name__ == "__main__":
    sys.exit(cli())
