"""Text pretraining data: fixed-length token blocks plus the student masks of the batch
expander (``expander.py``).

Reads what ``d2v-text-prep`` writes (``data-bin/dict.txt`` + mmap ``<split>.bin/.idx``) the
way fairseq's ``masked_lm`` task does: the split's token stream (every line ends with
``</s>``) is cut into blocks of ``tokens_per_sample - 1`` tokens and ``<s>`` is put in
front, so a sample is ``<s> ... </s> ... `` of at most ``tokens_per_sample`` tokens, the
layout the reference feeds its text model. As for audio, masks are sampled in the collater
from a generator seeded with (seed, epoch, sample ids): a resumed run sees the same masks.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from fairseq.data import Dictionary, FairseqDataset, PrependTokenDataset, TokenBlockDataset, data_utils

from .expander import BatchExpander
from .pretraining_dataset import PretrainingDataset

logger = logging.getLogger(__name__)

MASK = "<mask>"
# "none": a continuous stream cut every tokens_per_sample - 1 tokens (the reference's
# setting); "complete": blocks of whole lines, a line longer than a block gets a block of its
# own, split. fairseq's "eos" mode fails with numpy >= 2 (np.compat is gone), and
# "complete_doc" needs empty lines as document breaks, which d2v-text-prep drops.
BREAK_MODES = ("none", "complete")


def load_text_dictionary(data_dir: str) -> Dictionary:
    """``dict.txt`` plus ``<mask>``, appended exactly as fairseq's masked_lm task does, so
    indices are the reference's: <s>=0 <pad>=1 </s>=2 <unk>=3, pieces, <mask> last."""
    path = os.path.join(data_dir, "dict.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dictionary not found: {path} (make it with d2v-text-prep)")
    dictionary = Dictionary.load(path)
    dictionary.add_symbol(MASK)
    return dictionary


def load_text_blocks(data_dir: str, split: str, dictionary: Dictionary, tokens_per_sample: int,
                     break_mode: str = "none") -> FairseqDataset:
    """Blocks of at most ``tokens_per_sample`` tokens, each ``<s>`` + ``tokens_per_sample - 1``
    tokens of the split's stream (fairseq masked_lm's ``TokenBlockDataset`` +
    ``PrependTokenDataset``). Items are 1-D LongTensors."""
    if break_mode not in BREAK_MODES:
        raise ValueError(f"break_mode must be one of {BREAK_MODES}, got {break_mode!r}")
    if tokens_per_sample < 2:
        raise ValueError(f"tokens_per_sample must be at least 2 (<s> + one token), got {tokens_per_sample}")
    path = os.path.join(data_dir, split)
    tokens = data_utils.load_indexed_dataset(path, dictionary)
    if tokens is None:
        raise FileNotFoundError(f"text split not found: {path}.bin / {path}.idx "
                                f"(make it with d2v-text-prep)")
    if len(tokens) == 0:
        raise ValueError(f"{path}.bin holds no lines: the {split} text was empty")
    blocks = TokenBlockDataset(tokens, tokens.sizes, tokens_per_sample - 1, pad=dictionary.pad(),
                               eos=dictionary.eos(), break_mode=break_mode)
    logger.info("%s: %d lines -> %d blocks of <= %d tokens (break_mode=%s)", path, len(tokens),
                len(blocks), tokens_per_sample, break_mode)
    return PrependTokenDataset(blocks, dictionary.bos())


class TextPretrainingDataset(PretrainingDataset):
    """Token blocks batched for data2vec 2.0: right-padded sources, padding mask, and, with an
    ``expander``, its M precomputed masks per sample over the padded batch length (they may
    mask padding positions: the model excludes those via padding_mask).
    """

    def __init__(self, blocks: FairseqDataset, dictionary: Dictionary,
                 expander: Optional[BatchExpander] = None, seed: int = 1, shuffle: bool = True):
        super().__init__(seed=seed, shuffle=shuffle, expander=expander)
        self.blocks = blocks
        self.pad = dictionary.pad()
        self.sizes = np.asarray(blocks.sizes, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.blocks)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.blocks, "set_epoch"):
            self.blocks.set_epoch(epoch)

    def __getitem__(self, index: int) -> Dict:
        return {"id": index, "source": self.blocks[index]}

    def collater(self, samples: List[Dict]) -> Dict:
        if not samples:
            return {}
        ids = [s["id"] for s in samples]
        source = data_utils.collate_tokens([s["source"] for s in samples], self.pad)  # (B, T)
        padding_mask = source.eq(self.pad)                                           # (B, T)
        net_input = {"source": source, "padding_mask": padding_mask}
        mask = self.student_masks(ids, source.size(1))
        if mask is not None:
            net_input["precomputed_mask"] = mask                                     # (B*M, T)
        return {"id": torch.LongTensor(ids), "net_input": net_input,
                "ntokens": int((~padding_mask).sum()), "nsentences": len(samples)}


@dataclass
class LabelledText:
    """Labelled lines encoded for a classification probe.

    source:       (N, T) long, ``<s>`` pieces ``</s>`` then ``<pad>``, T <= max_tokens.
    padding_mask: (N, T) bool, True at padding.
    labels:       (N,) long, index into ``label_names``.
    line_numbers: 1-based line of each row in the text file (skipped lines leave gaps).
    """

    source: torch.Tensor
    padding_mask: torch.Tensor
    labels: torch.Tensor
    label_names: List[str]
    line_numbers: List[int]


def _read_lines(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def encode_labelled_lines(text_path: str, label_path: str, data_dir: str, max_tokens: int,
                          label_names: Optional[Sequence[str]] = None,
                          dictionary: Optional[Dictionary] = None) -> LabelledText:
    """Encode ``text_path`` (one example per line) with the sentencepiece model and dictionary
    of ``data_dir`` (``d2v-text-prep``'s data-bin), labels from ``label_path`` (one per line).

    Same pieces and indices as the pretraining data. ``label_names`` fixes the classes and
    their order (pass the train split's to valid/test); lines with other labels are skipped
    (counted in the log), as are empty lines. Without it the classes are the file's sorted
    labels. Lines longer than ``max_tokens`` (with ``<s>`` and ``</s>``) keep their start.
    """
    from ..text.bpe import PieceEncoder

    texts, labels = _read_lines(text_path), _read_lines(label_path)
    if len(texts) != len(labels):
        raise ValueError(f"{text_path} has {len(texts)} lines but {label_path} has {len(labels)}: "
                         f"text and labels must match line for line")
    if max_tokens < 3:
        raise ValueError(f"max_tokens must be at least 3 (<s>, a token, </s>), got {max_tokens}")
    dictionary = dictionary or load_text_dictionary(data_dir)
    encoder = PieceEncoder(os.path.join(data_dir, "spm.model"))
    names = list(label_names) if label_names is not None else sorted({l.strip() for l in labels if l.strip()})
    index = {name: i for i, name in enumerate(names)}

    rows, ys, numbers = [], [], []
    skipped_label = skipped_empty = truncated = 0
    for number, (text, enc, label) in enumerate(zip(texts, encoder.encode_many(texts), labels), start=1):
        label = label.strip()
        if label not in index:
            skipped_label += 1
            continue
        if not enc.pieces:
            skipped_empty += 1
            continue
        ids = dictionary.encode_line(" ".join(enc.pieces), add_if_not_exist=False, append_eos=True).long()
        if len(ids) + 1 > max_tokens:
            ids = torch.cat([ids[:max_tokens - 2], ids[-1:]])  # keep the start and </s>
            truncated += 1
        rows.append(torch.cat([ids.new_tensor([dictionary.bos()]), ids]))
        ys.append(index[label])
        numbers.append(number)
    if skipped_label:
        logger.info("%s: skipped %d line(s) whose label is not one of %d classes", label_path,
                    skipped_label, len(names))
    if skipped_empty:
        logger.warning("%s: skipped %d empty line(s)", text_path, skipped_empty)
    if truncated:
        logger.info("%s: truncated %d line(s) to %d tokens", text_path, truncated, max_tokens)
    if not rows:
        raise ValueError(f"{text_path}: no line left to encode (labels in {label_path} vs classes {names})")
    source = data_utils.collate_tokens(rows, dictionary.pad())
    return LabelledText(source, source.eq(dictionary.pad()), torch.tensor(ys, dtype=torch.long),
                        names, numbers)
