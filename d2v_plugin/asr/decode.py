"""A fine-tuned CTC checkpoint and a manifest -> one hypothesis per utterance.

The one decoding path of ``d2v-infer`` (which adds references and scores) and
``d2v-transcribe`` (which needs none): ``load_ctc_model`` checks that the checkpoint can
decode, ``HypothesisDecoder`` turns emissions into (units, words) greedily or with the
lexicon + n-gram LM beam search, and ``decode_manifest`` batches ``<data>/<split>.tsv``
through the model and returns the hypotheses in manifest order.

Greedy decoding is Viterbi/best-path CTC: per frame argmax, runs collapsed, blanks dropped,
padded frames (the encoder's frame padding mask) ignored; letters become words at ``|``,
like fairseq's ``post_process(..., "letter")``. With the LM the units are the spelling of
the decoded words. Batching: utterances are padded to the longest of their batch
(``max_tokens`` samples, ``batch_size`` utterances). The reference data2vec 2.0 convolutional
positional encoder sees padded frames near the end of shorter utterances, so a hypothesis can
depend on its batch (measured: 59.8 vs 51.8 % CER for a model fine-tuned from a data2vec 2.0
checkpoint, docs/results.md 3.2); models pretrained with ``conv_pos_zero_padding: true`` (our
audio configs) do not, and ``batch_size=1`` decodes every utterance exactly as alone.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .. import console
from .ctc import greedy_decode, ids_to_units, units_to_words

logger = logging.getLogger(__name__)


def words_to_units(words: Sequence[str]) -> str:
    """``["HI", "YOU"]`` -> ``"H I | Y O U |"`` (canonical letter units)."""
    return " ".join(c for w in words for c in [*w, "|"])


@dataclass
class CtcModel:
    """A fine-tuned ``wav2vec_ctc`` model ready to decode, with its task (target dictionary)."""

    model: torch.nn.Module
    cfg: object
    task: object
    use_cuda: bool


def load_ctc_model(checkpoint: str, data: str, cpu: bool = False) -> CtcModel:
    """Load ``checkpoint`` with ``task.data = data``; UserInputError unless it decodes letters."""
    from .checkpoint import load_model_and_task

    model, cfg, task = load_model_and_task(checkpoint, data)
    if cfg.model._name != "wav2vec_ctc":
        raise console.UserInputError(f"{checkpoint}: model {cfg.model._name!r} is not a fine-tuned "
                                     f"CTC model (wav2vec_ctc); pretrained checkpoints cannot decode")
    labels = cfg.task.get("labels")
    if labels != "ltr":
        raise console.UserInputError(f"{checkpoint}: fine-tuned on {labels!r} labels; only letter "
                                     f"targets (task.labels=ltr) are supported")
    use_cuda = torch.cuda.is_available() and not cpu
    if use_cuda:
        model.cuda()
    return CtcModel(model, cfg, task, use_cuda)


def decoder_name(lm: Optional[str]) -> str:
    """How hypotheses are decoded, as reported in scores and transcripts."""
    return "lexicon+lm beam" if lm else "greedy"


class HypothesisDecoder:
    """(B, T, V) log-probabilities + frame padding -> [(units, words)] per utterance."""

    def __init__(self, task, lm: Optional[str] = None, lexicon: Optional[str] = None, beam_options=None):
        tgt_dict = task.target_dictionary
        self.symbols = list(tgt_dict.symbols)
        self.blank = tgt_dict.index(task.blank_symbol) if hasattr(task, "blank_symbol") else tgt_dict.bos()
        self.specials = {tgt_dict.bos(), tgt_dict.pad(), tgt_dict.eos()}
        self.lm_decoder = None
        if lm or lexicon:
            if not (lm and lexicon):
                raise console.UserInputError("--lm and --lexicon go together")
            from .lm_decoder import make_decoder

            self.lm_decoder = make_decoder(self.symbols, self.blank, tgt_dict.index("|"), lexicon, lm,
                                           beam_options)

    @property
    def name(self) -> str:
        return decoder_name("lm" if self.lm_decoder else None)

    def __call__(self, emissions: torch.Tensor, padding: Optional[torch.Tensor]) -> List[Tuple[str, str]]:
        if self.lm_decoder is None:
            out = []
            for units in greedy_decode(emissions, padding, self.blank):
                text = ids_to_units(units, self.symbols, self.specials)
                out.append((text, units_to_words(text)))
            return out
        lengths = ([emissions.size(1)] * emissions.size(0) if padding is None
                   else (~padding).sum(1).tolist())
        return [(words_to_units(words), " ".join(words))
                for _, words in self.lm_decoder.decode(emissions, lengths)]


def manifest_size(tsv: str) -> int:
    with open(tsv, encoding="utf-8") as f:
        return sum(1 for line in f.read().splitlines()[1:] if line.strip())


def load_audio_split(ctc: CtcModel, split: str, with_labels: bool) -> None:
    """``task.load_dataset(split)``; without labels only the audio (fairseq's
    ``audio_pretraining`` part of the fine-tuning task), so no ``<split>.ltr`` is needed."""
    if with_labels:
        ctc.task.load_dataset(split)
        return
    from fairseq.tasks.audio_pretraining import AudioPretrainingTask

    AudioPretrainingTask.load_dataset(ctc.task, split)


def decode_manifest(ctc: CtcModel, split: str, decoder: HypothesisDecoder, n: int,
                    max_tokens: Optional[int] = 1_000_000, batch_size: Optional[int] = None
                    ) -> Tuple[List[Optional[str]], List[Optional[str]]]:
    """(units, words) per line of the loaded ``split`` (``n`` manifest lines) in MANIFEST ORDER,
    ``None`` where the dataset skipped an utterance (e.g. too short)."""
    from fairseq import utils as fairseq_utils

    dataset = ctc.task.dataset(split)
    skipped = getattr(getattr(dataset, "dataset", dataset), "skipped_indices", set()) or set()
    kept = [i for i in range(n) if i not in skipped]  # dataset id -> manifest position
    itr = ctc.task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens, max_sentences=batch_size, max_positions=None,
        ignore_invalid_inputs=False, required_batch_size_multiple=1, num_workers=0,
    ).next_epoch_itr(shuffle=False)
    units: List[Optional[str]] = [None] * n
    words: List[Optional[str]] = [None] * n
    done, last_report = 0, time.time()
    with torch.inference_mode():
        for sample in itr:
            if not sample:
                continue
            if ctc.use_cuda:
                sample = fairseq_utils.move_to_cuda(sample)
            net_output = ctc.model(**sample["net_input"])
            emissions = ctc.model.get_normalized_probs(net_output, log_probs=True).transpose(0, 1)
            padding = net_output["padding_mask"]                        # (B, T) frames, or None
            for sid, (u, w) in zip(sample["id"].tolist(), decoder(emissions, padding)):
                units[kept[sid]], words[kept[sid]] = u, w
            done += len(sample["id"])
            if time.time() - last_report > 10:
                logger.info("decoded %d of %d utterances", done, len(kept))
                last_report = time.time()
    missing = [i for i, h in enumerate(words) if h is None]
    if missing:
        logger.warning("%d of %d utterances were not decoded (skipped by the dataset, e.g. too "
                       "short): manifest lines %s", len(missing), n, [i + 2 for i in missing[:10]])
    return units, words


def manifest_path(data: str, split: str) -> str:
    tsv = os.path.join(data, f"{split}.tsv")
    if not os.path.isfile(tsv):
        raise FileNotFoundError(f"no manifest {tsv} for split {split!r}")
    return tsv


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    """Batching, device and LM options shared by d2v-infer and d2v-transcribe."""
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


def beam_options_from(args: argparse.Namespace):
    """``BeamOptions`` from the parsed ``--beam ...`` flags, or None without ``--lm``."""
    if not args.lm:
        return None
    from .lm_decoder import BeamOptions

    return BeamOptions(beam=args.beam, beam_threshold=args.beam_threshold, lm_weight=args.lm_weight,
                       word_score=args.word_score)
