"""Decode a split with a fine-tuned ``wav2vec_ctc`` checkpoint and score it (``d2v-infer``).

Example::

    d2v-infer checkpoints/finetune_tiny/checkpoint_best.pt --data data/speech_corpus \\
        --split test --results-dir results/ [--max-tokens 1000000] [--batch-size 16] [--cpu]
    # with a lexicon and an n-gram LM (pip install 'd2v_plugin[lm]'; see d2v-lm):
    d2v-infer ckpt.pt --data data/speech_corpus --split test --results-dir results/ \\
        --lm lm/lm.arpa --lexicon lm/lexicon.txt --beam 50 --lm-weight 2 --word-score -1

Only the fine-tuned checkpoint is needed: the pretrained one it was fine-tuned from may be
gone (see ``checkpoint.py``). ``--data`` must hold ``<split>.tsv`` and ``<split>.ltr`` (the
references); the target dictionary comes from the checkpoint.

Output (``--results-dir``), one line per utterance in MANIFEST ORDER (line i belongs to the
i-th audio line of ``<split>.tsv``, although batches are decoded sorted by length):

* ``hypo.word-<split>.txt`` / ``ref.word-<split>.txt``: upper-case words, single spaces;
* ``hypo.units-<split>.txt`` / ``ref.units-<split>.txt``: letters separated by spaces with
  ``|`` after each word (the ``.ltr`` format);
* ``scores-<split>.json``: ``{"wer", "cer"`` (percent), ``"word_errors", "words",
  "char_errors", "chars", "utterances", "decoder", "checkpoint", "split"}``.

Decoding (greedy Viterbi CTC by default, or ``--lm``/``--lexicon`` beam search) and batching
are ``decode.py``'s, shared with ``d2v-transcribe`` (which needs no references); WER and CER
(``wer.py``) are printed and returned. ``--batch-size 1`` decodes every utterance unpadded,
exactly as on its own (see ``decode.py`` for why a batch can matter with reference checkpoints).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .. import console
from .ctc import units_to_words
from .decode import (HypothesisDecoder, add_decoding_arguments, beam_options_from, decode_manifest,
                     load_audio_split, load_ctc_model, manifest_path, manifest_size,
                     words_to_units)  # noqa: F401  (words_to_units: kept importable here)
from .wer import ErrorRate, cer, wer

logger = logging.getLogger(__name__)


@dataclass
class InferResult:
    """What ``decode_split`` measured and wrote."""

    wer: ErrorRate
    cer: ErrorRate
    utterances: int
    files: Dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, float]:
        return {"wer": self.wer.rate, "cer": self.cer.rate, "word_errors": self.wer.errors,
                "words": self.wer.ref_len, "char_errors": self.cer.errors,
                "chars": self.cer.ref_len, "utterances": self.utterances}


def _read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)


def decode_split(checkpoint: str, data: str, split: str, results_dir: str,
                 max_tokens: Optional[int] = 1_000_000, batch_size: Optional[int] = None,
                 cpu: bool = False, lm: Optional[str] = None, lexicon: Optional[str] = None,
                 beam_options=None) -> InferResult:
    """Decode ``<data>/<split>.tsv`` with ``checkpoint``; write and score the results."""
    tsv = manifest_path(data, split)
    ctc = load_ctc_model(checkpoint, data, cpu)
    label_path = os.path.join(data, f"{split}.{ctc.cfg.task.labels}")
    if not os.path.isfile(label_path):
        raise FileNotFoundError(f"no references {label_path} for split {split!r}")
    ref_units = [" ".join(line.split()) for line in _read_lines(label_path)]
    n = manifest_size(tsv)
    if len(ref_units) != n:
        raise console.UserInputError(f"{label_path} has {len(ref_units)} lines but {tsv} lists {n} "
                                     f"utterances (d2v-labels --check explains)")
    decoder = HypothesisDecoder(ctc.task, lm, lexicon, beam_options)
    load_audio_split(ctc, split, with_labels=True)
    hypo_units, hypo_words = decode_manifest(ctc, split, decoder, n, max_tokens, batch_size)
    hypo_units = [h or "" for h in hypo_units]   # skipped utterances: empty hypotheses
    hypo_words = [h or "" for h in hypo_words]
    ref_words = [units_to_words(u) for u in ref_units]

    os.makedirs(results_dir, exist_ok=True)
    files = {
        "hypo.word": os.path.join(results_dir, f"hypo.word-{split}.txt"),
        "ref.word": os.path.join(results_dir, f"ref.word-{split}.txt"),
        "hypo.units": os.path.join(results_dir, f"hypo.units-{split}.txt"),
        "ref.units": os.path.join(results_dir, f"ref.units-{split}.txt"),
        "scores": os.path.join(results_dir, f"scores-{split}.json"),
    }
    for key, lines in (("hypo.word", hypo_words), ("ref.word", ref_words),
                       ("hypo.units", hypo_units), ("ref.units", ref_units)):
        _write_lines(files[key], lines)
    result = InferResult(wer(ref_words, hypo_words), cer(ref_words, hypo_words), n, files)
    scores = {**result.as_dict(), "decoder": decoder.name,
              "checkpoint": os.path.abspath(checkpoint), "split": split}
    with open(files["scores"], "w", encoding="utf-8") as f:
        json.dump(scores, f, indent=2)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="d2v-infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="fine-tuned wav2vec_ctc checkpoint (e.g. checkpoint_best.pt)")
    p.add_argument("--data", required=True, help="folder with <split>.tsv and <split>.ltr")
    p.add_argument("--split", default="test")
    p.add_argument("--results-dir", required=True, help="where hypo/ref files and scores go")
    add_decoding_arguments(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> InferResult:
    args = build_parser().parse_args(argv)
    result = decode_split(args.checkpoint, args.data, args.split, args.results_dir,
                          args.max_tokens, args.batch_size, args.cpu, args.lm, args.lexicon,
                          beam_options_from(args))
    print(f"{args.split}: {result.utterances} utterances  WER {result.wer}  CER {result.cer}")
    print(f"results in {args.results_dir}")
    return result


def cli() -> int:
    from .lm_decoder import LMDecoderUnavailable

    return console.run(main, "d2v-infer", (console.UserInputError, FileNotFoundError, LMDecoderUnavailable))


if __name__ == "__main__":
    sys.exit(cli())
