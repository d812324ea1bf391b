"""Lexicon-constrained CTC beam search with a KenLM n-gram LM, through flashlight-text.

Why flashlight-text: it is the maintained home of the wav2letter decoder that fairseq's own
``W2lKenLMDecoder`` wraps, ships prebuilt wheels with KenLM compiled in (reads ARPA or
binary KenLM files), and needs no fairseq example code. Optional: ``pip install
'd2v_plugin[lm]'``.

The lexicon maps each word to its letter spelling ending in the word boundary ``|``
(``WORD<TAB>W O R D |``, see ``ngram.py``); words whose letters are not in the model's
dictionary are left out (with a warning), since the model cannot emit them.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)


class LMDecoderUnavailable(ImportError):
    """flashlight-text is not installed."""


@dataclass
class BeamOptions:
    beam: int = 50
    beam_threshold: float = 25.0
    lm_weight: float = 2.0
    word_score: float = -1.0
    unk_score: float = -math.inf
    sil_score: float = 0.0


class LexiconLMDecoder:
    """Beam search over (B, T, V) CTC log-probabilities; returns (unit ids, words) per utterance.

    ``symbols`` is the model's token list (fairseq ``Dictionary.symbols``), ``blank`` and
    ``silence`` the ids of the CTC blank and the word boundary ``|``.
    """

    def __init__(self, symbols: Sequence[str], blank: int, silence: int, lexicon: str, lm: str,
                 options: BeamOptions = BeamOptions()):
        try:
            from flashlight.lib.text.decoder import (CriterionType, LexiconDecoder,
                                                     LexiconDecoderOptions, SmearingMode, Trie)
            from flashlight.lib.text.dictionary import create_word_dict, load_words
            try:  # its new home (flashlight-text >= 0.0.7); the old path warns
                from flashlight.lib.text.decoder.kenlm import KenLM
            except ImportError:
                from flashlight.lib.text.decoder import KenLM
        except ImportError as e:
            raise LMDecoderUnavailable(
                f"LM decoding needs flashlight-text (pip install 'd2v_plugin[lm]'): {e}") from e
        index = {s: i for i, s in enumerate(symbols)}
        self.blank = blank
        words = load_words(lexicon)
        self.word_dict = create_word_dict(words)
        self.lm = KenLM(lm, self.word_dict)
        unk_word = self.word_dict.get_index("<unk>")
        trie = Trie(len(symbols), silence)
        start = self.lm.start(False)
        skipped = []
        for word, spellings in words.items():
            word_idx = self.word_dict.get_index(word)
            _, score = self.lm.score(start, word_idx)
            for spelling in spellings:
                ids = [index.get(t) for t in spelling]
                if any(i is None for i in ids):
                    skipped.append(word)
                    continue
                trie.insert(ids, word_idx, score)
        if skipped:
            logger.warning("lexicon: %d words use letters the model cannot emit and were left "
                           "out, e.g. %s", len(skipped), skipped[:5])
        trie.smear(SmearingMode.MAX)
        opts = LexiconDecoderOptions(
            beam_size=options.beam, beam_size_token=len(symbols),
            beam_threshold=options.beam_threshold, lm_weight=options.lm_weight,
            word_score=options.word_score, unk_score=options.unk_score,
            sil_score=options.sil_score, log_add=False, criterion_type=CriterionType.CTC)
        self.decoder = LexiconDecoder(opts, trie, self.lm, silence, blank, unk_word, [], False)

    def decode(self, emissions: torch.Tensor,
               lengths: Sequence[int]) -> List[Tuple[List[int], List[str]]]:
        """Best (collapsed unit ids, words) per utterance; ``emissions`` (B, T, V), only the
        first ``lengths[b]`` frames of row b are valid.

        The unit ids are the decoder's token path (CTC-collapsed, blanks removed); it can hold
        extra word boundaries (a leading one, or two separated by a blank): callers that want
        canonical units should spell the words instead.
        """
        emissions = emissions.detach().float().cpu().contiguous()
        B, _, V = emissions.shape
        out = []
        for b in range(B):
            T = int(lengths[b])
            ptr = emissions.data_ptr() + 4 * b * emissions.stride(0)
            results = self.decoder.decode(ptr, T, V)
            if not results:
                out.append(([], []))
                continue
            best = results[0]
            ids = [g for g, _ in itertools.groupby(best.tokens)]
            ids = [i for i in ids if i >= 0 and i != self.blank]
            words = [self.word_dict.get_entry(w) for w in best.words if w >= 0]
            out.append((ids, words))
        return out


def make_decoder(symbols: Sequence[str], blank: int, silence: int, lexicon: str, lm: str,
                 options: Optional[BeamOptions] = None) -> LexiconLMDecoder:
    return LexiconLMDecoder(symbols, blank, silence, lexicon, lm, options or BeamOptions())
