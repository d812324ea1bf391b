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

Greedy decoding (the default) is Viterbi/best-path CTC: per frame argmax, runs collapsed,
blanks dropped, padded frames (the encoder's frame padding mask) ignored; letters become
words at ``|``, like fairseq's ``post_process(..., "letter")`` (a model that emits the
dictionary's ``<unk>`` gets it in the output as is). WER and CER (``wer.py``) are printed
and returned. With ``--lm`` the hypothesis units are the spelling of the decoded words.

Batching: utterances are padded to the longest of their batch (``--max-tokens`` audio
samples, ``--batch-size`` utterances). Padded frames are masked in attention, but data2vec
2.0's convolutional positional encoder (as in the reference implementation) still sees them
near the end of shorter utterances, so a hypothesis can depend slightly on its batch;
``--batch-size 1`` decodes every utterance unpadded, exactly as on its own.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from .. import console
from .ctc import greedy_decode, ids_to_units, units_to_words
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


def words_to_units(words: Sequence[str]) -> str:
    """``["HI", "YOU"]`` -> ``"H I | Y O U |"`` (canonical letter units)."""
    return " ".join(c for w in words for c in [*w, "|"])


def _read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _manifest_size(tsv: str) -> int:
    return sum(1 for line in _read_lines(tsv)[1:] if line.strip())


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)


def decode_split(checkpoint: str, data: str, split: str, results_dir: str,
                 max_tokens: Optional[int] = 1_000_000, batch_size: Optional[int] = None,
                 cpu: bool = False, lm: Optional[str] = None, lexicon: Optional[str] = None,
                 beam_options=None) -> InferResult:
    """Decode ``<data>/<split>.tsv`` with ``checkpoint``; write and score the results."""
    from fairseq import utils as fairseq_utils

    from .checkpoint import load_model_and_task

    tsv = os.path.join(data, f"{split}.tsv")
    if not os.path.isfile(tsv):
        raise FileNotFoundError(f"no manifest {tsv} for split {split!r}")
    use_cuda = torch.cuda.is_available() and not cpu
    model, cfg, task = load_model_and_task(checkpoint, data)
    if cfg.model._name != "wav2vec_ctc":
        raise console.UserInputError(f"{checkpoint}: model {cfg.model._name!r} is not a fine-tuned "
                                  f"CTC model (wav2vec_ctc); pretrained checkpoints cannot decode")
    labels = cfg.task.get("labels")
    if labels != "ltr":
        raise console.UserInputError(f"{checkpoint}: fine-tuned on {labels!r} labels; only letter "
                                  f"targets (task.labels=ltr) are supported")
    label_path = os.path.join(data, f"{split}.{labels}")
    if not os.path.isfile(label_path):
        raise FileNotFoundError(f"no references {label_path} for split {split!r}")
    ref_units = [" ".join(line.split()) for line in _read_lines(label_path)]
    n = _manifest_size(tsv)
    if len(ref_units) != n:
        raise console.UserInputError(f"{label_path} has {len(ref_units)} lines but {tsv} lists {n} "
                                  f"utterances (d2v-labels --check explains)")
    if use_cuda:
        model.cuda()

    task.load_dataset(split)
    dataset = task.dataset(split)
    skipped = getattr(getattr(dataset, "dataset", dataset), "skipped_indices", set()) or set()
    kept = [i for i in range(n) if i not in skipped]  # dataset id -> manifest position

    tgt_dict = task.target_dictionary
    symbols = list(tgt_dict.symbols)
    blank = tgt_dict.index(task.blank_symbol) if hasattr(task, "blank_symbol") else tgt_dict.bos()
    specials = {tgt_dict.bos(), tgt_dict.pad(), tgt_dict.eos()}
    lm_decoder = None
    if lm or lexicon:
        if not (lm and lexicon):
            raise console.UserInputError("--lm and --lexicon go together")
        from .lm_decoder import make_decoder

        lm_decoder = make_decoder(symbols, blank, tgt_dict.index("|"), lexicon, lm, beam_options)

    itr = task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens, max_sentences=batch_size, max_positions=None,
        ignore_invalid_inputs=False, required_batch_size_multiple=1, num_workers=0,
    ).next_epoch_itr(shuffle=False)
    hypo_units: List[Optional[str]] = [None] * n
    hypo_words: List[Optional[str]] = [None] * n
    with torch.inference_mode():
        for sample in itr:
            if not sample:
                continue
            if use_cuda:
                sample = fairseq_utils.move_to_cuda(sample)
            net_output = model(**sample["net_input"])
            emissions = model.get_normalized_probs(net_output, log_probs=True).transpose(0, 1)
            padding = net_output["padding_mask"]                        # (B, T) frames, or None
            ids = sample["id"].tolist()
            if lm_decoder is None:
                for sid, units in zip(ids, greedy_decode(emissions, padding, blank)):
                    text = ids_to_units(units, symbols, specials)
                    hypo_units[kept[sid]] = text
                    hypo_words[kept[sid]] = units_to_words(text)
            else:
                lengths = ([emissions.size(1)] * emissions.size(0) if padding is None
                           else (~padding).sum(1).tolist())
                for sid, (_, words) in zip(ids, lm_decoder.decode(emissions, lengths)):
                    hypo_units[kept[sid]] = words_to_units(words)
                    hypo_words[kept[sid]] = " ".join(words)
    missing = [i for i, h in enumerate(hypo_words) if h is None]
    if missing:
        logger.warning("%d of %d utterances were not decoded (skipped by the dataset, e.g. too "
                       "short): empty hypotheses written for manifest lines %s", len(missing), n,
                       [i + 2 for i in missing[:10]])
    hypo_units = [h or "" for h in hypo_units]
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
    scores = {**result.as_dict(), "decoder": "lexicon+lm beam" if lm_decoder else "greedy",
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
    p.add_argument("--max-tokens", type=int, default=1_000_000, help="audio samples per batch")
    p.add_argument("--batch-size", type=int, default=None, help="utterances per batch (cap)")
    p.add_argument("--cpu", action="store_true", help="decode on CPU even if CUDA is available")
    lm = p.add_argument_group("lexicon + n-gram LM beam search (needs flashlight-text)")
    lm.add_argument("--lm", help="KenLM model: ARPA or binary (see d2v-lm)")
    lm.add_argument("--lexicon", help="WORD<TAB>W O R D | lines")
    lm.add_argument("--beam", type=int, default=50)
    lm.add_argument("--beam-threshold", type=float, default=25.0)
    lm.add_argument("--lm-weight", type=float, default=2.0)
    lm.add_argument("--word-score", type=float, default=-1.0)
    p.add_argument("--log-level", default="INFO", help="logging level of the command (console script)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> InferResult:
    args = build_parser().parse_args(argv)
    beam_options = None
    if args.lm:
        from .lm_decoder import BeamOptions

        beam_options = BeamOptions(beam=args.beam, beam_threshold=args.beam_threshold,
                                   lm_weight=args.lm_weight, word_score=args.word_score)
    result = decode_split(args.checkpoint, args.data, args.split, args.results_dir,
                          args.max_tokens, args.batch_size, args.cpu, args.lm, args.lexicon,
                          beam_options)
    print(f"{args.split}: {result.utterances} utterances  WER {result.wer}  CER {result.cer}")
    print(f"results in {args.results_dir}")
    return result


def cli() -> int:
    from .lm_decoder import LMDecoderUnavailable

    return console.run(main, "d2v-infer", (console.UserInputError, FileNotFoundError, LMDecoderUnavailable))


if __name__ == "__main__":
    sys.exit(cli())
