"""Text -> BPE pieces -> fairseq dictionary indices, the one encoding used everywhere.

``d2v-text-prep`` writes pieces with it before fairseq binarizes them, and the probe helper
encodes labelled lines with it, so the two can never disagree.

Characters outside the model: the model is trained with ``character_coverage=1.0``, so it
knows every character of its training text. Any other character (an emoji or CJK in an
English corpus) is encoded as ``<unk>``: sentencepiece makes one unknown piece of each run
of such characters, and we write it as the literal ``<unk>``, which fairseq's dictionary
maps to its ``<unk>`` index. Nothing crashes; ``EncodedLine.unk_chars`` counts them. With
``byte_fallback`` (``d2v-text-prep --byte-fallback``) they are spelled as UTF-8 byte pieces
instead and nothing becomes ``<unk>``.
"""
from __future__ import annotations

import os
from typing import Iterable, List, NamedTuple, Sequence

import sentencepiece as spm

UNK = "<unk>"
# Symbols fairseq's dictionary reserves (masked_lm adds <mask> at load time): a piece that
# spells one of them must not alias it, so it is encoded as <unk> and left out of dict.txt.
RESERVED = frozenset({"<s>", "<pad>", "</s>", "<unk>", "<mask>"})


class EncodedLine(NamedTuple):
    pieces: List[str]   # BPE pieces; out-of-model text as "<unk>"
    unk_pieces: int     # how many pieces are <unk>
    unk_chars: int      # how many characters of the input those <unk> pieces cover


def usable_piece(piece: str) -> bool:
    """A piece fairseq can hold: one whitespace-free token that is not a reserved symbol."""
    return piece not in RESERVED and piece.split() == [piece]


class PieceEncoder:
    """A sentencepiece model that turns lines into pieces for fairseq's dictionary."""

    def __init__(self, model_path: str):
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"sentencepiece model not found: {model_path}")
        self.model_path = model_path
        self.sp = spm.SentencePieceProcessor(model_file=model_path)
        self._unusable = {i for i in range(self.sp.get_piece_size())
                          if not self.sp.is_unknown(i) and not self.sp.is_control(i)
                          and not usable_piece(self.sp.id_to_piece(i))}

    def vocabulary(self) -> List[str]:
        """The model's pieces that go into dict.txt, in model order (no <unk>, <s>, </s>)."""
        return [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())
                if not (self.sp.is_unknown(i) or self.sp.is_control(i) or i in self._unusable)]

    def encode(self, line: str) -> EncodedLine:
        return self.encode_many([line])[0]

    def encode_many(self, lines: Sequence[str]) -> List[EncodedLine]:
        out = []
        for proto in self.sp.encode(list(lines), out_type="proto"):
            pieces, unk_pieces, unk_chars = [], 0, 0
            for p in proto.pieces:
                if self.sp.is_unknown(p.id) or p.id in self._unusable:
                    pieces.append(UNK)
                    unk_pieces += 1
                    unk_chars += len(p.surface.strip())
                else:
                    pieces.append(p.piece)
            out.append(EncodedLine(pieces, unk_pieces, unk_chars))
        return out


def train_bpe(lines: Iterable[str], model_prefix: str, vocab_size: int, byte_fallback: bool = False,
              threads: int = 1, max_lines: int = 10_000_000) -> str:
    """Train a BPE model on ``lines`` (non-empty strings); returns ``<model_prefix>.model``.

    ``character_coverage=1.0`` keeps every character of the training text (rare symbols of
    technical English matter); sentencepiece's default NFKC normalisation applies. At most
    ``max_lines`` lines are used (a random sample beyond that; seed it with
    ``sentencepiece.set_random_generator_seed``). Deterministic for the same lines.
    """
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=model_prefix, model_type="bpe",
        vocab_size=vocab_size, character_coverage=1.0, byte_fallback=byte_fallback,
        input_sentence_size=max_lines, shuffle_input_sentence=True,
        max_sentence_length=1 << 16,  # bytes; longer lines are left out of training only
        num_threads=max(1, threads), minloglevel=2)
    return model_prefix + ".model"
