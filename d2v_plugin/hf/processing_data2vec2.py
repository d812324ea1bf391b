"""Feature extractor and CTC tokenizer that reproduce ``d2v-infer``'s greedy decoding in
transformers' ``automatic-speech-recognition`` pipeline.

Standalone (torch, numpy, transformers); ``d2v-export-hf`` copies it into the exported folder.
They differ from wav2vec 2.0's classes in exactly what fairseq does differently:

* normalisation: fairseq's ``audio_finetuning`` (``task.normalize``) applies
  ``F.layer_norm(wav, wav.shape)`` per utterance (eps 1e-5, float32), transformers'
  ``Wav2Vec2FeatureExtractor`` ``(x - mean) / sqrt(var + 1e-7)`` in numpy;
* decoding: fairseq's target dictionary has ``<s>`` (the CTC blank), ``<pad>`` and ``</s>``
  as specials; ``d2v-infer`` collapses runs, drops the blank, leaves out ``<pad>`` and ``</s>``
  and keeps ``<unk>``, then turns ``|`` into single spaces. ``Wav2Vec2CTCTokenizer`` drops
  only its pad token after grouping.
"""
from __future__ import annotations

from itertools import groupby
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor


class Data2Vec2FeatureExtractor(Wav2Vec2FeatureExtractor):
    """``Wav2Vec2FeatureExtractor`` with fairseq's per-utterance normalisation."""

    @staticmethod
    def zero_mean_unit_var_norm(input_values: List[np.ndarray], attention_mask: Optional[List[np.ndarray]],
                                padding_value: float = 0.0) -> List[np.ndarray]:
        lengths = ([len(x) for x in input_values] if attention_mask is None
                   else np.asarray(attention_mask, np.int64).sum(-1).tolist())
        normed = []
        for vector, length in zip(input_values, lengths):
            wav = torch.from_numpy(np.ascontiguousarray(vector[:length], dtype=np.float32))
            out = np.full(len(vector), padding_value, dtype=np.float32)
            out[:length] = F.layer_norm(wav, wav.shape).numpy()
            normed.append(out)
        return normed


class Data2Vec2CTCTokenizer(Wav2Vec2CTCTokenizer):
    """``Wav2Vec2CTCTokenizer`` over fairseq's letter dictionary; ``dropped_tokens`` (fairseq's
    bos/blank, pad and eos) are left out after CTC grouping, like ``d2v-infer``."""

    def __init__(self, vocab_file, dropped_tokens: Sequence[str] = ("<s>", "<pad>", "</s>"), **kwargs):
        self.dropped_tokens = list(dropped_tokens)
        super().__init__(vocab_file, dropped_tokens=list(dropped_tokens), **kwargs)

    def convert_tokens_to_string(self, tokens: List[str], group_tokens: bool = True,
                                 spaces_between_special_tokens: bool = False,
                                 output_char_offsets: bool = False, output_word_offsets: bool = False):
        if output_char_offsets or output_word_offsets:
            return super().convert_tokens_to_string(tokens, group_tokens, spaces_between_special_tokens,
                                                    output_char_offsets, output_word_offsets)
        units = [t for t, _ in groupby(tokens)] if group_tokens else list(tokens)
        dropped = {self.pad_token, *self.dropped_tokens}
        text = "".join(u for u in units if u not in dropped)
        text = " ".join(text.replace(self.word_delimiter_token, " ").split())
        if self.do_lower_case:
            text = text.lower()
        return {"text": text, "char_offsets": None, "word_offsets": None}
