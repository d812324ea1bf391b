"""Greedy CTC, letter post-processing, the ARPA writer and the lexicon + LM beam decoder."""
import re

import pytest
import torch

from d2v_plugin.asr.ctc import collapse, greedy_decode, ids_to_units, units_to_words
from d2v_plugin.asr.ngram import bigram_arpa, write_lm

# The symbol table of a fairseq letter dictionary (index 0 <s> is the CTC blank).
SYMBOLS = ["<s>", "<pad>", "</s>", "<unk>", "|", "E", "S", "R", "A", "T", "O", "I", "H", "L",
           "N", "Y", "U", "D", "P", "C", "M", "G", "B", "W", "K", "F", "V", "'", "Q", "J", "Z", "X"]
IDX = {s: i for i, s in enumerate(SYMBOLS)}


def test_collapse_merges_repeats_then_drops_blanks():
    assert collapse([1, 1, 0, 1, 2, 2, 0, 0, 2], blank=0) == [1, 1, 2, 2]
    assert collapse([0, 0, 0], blank=0) == []


def test_greedy_decode_ignores_padded_frames():
    emissions = torch.full((2, 4, len(SYMBOLS)), -5.0)
    for t, s in enumerate("HI|X"):
        emissions[0, t, IDX[s]] = 0.0
        emissions[1, t, IDX[s]] = 0.0
    padding = torch.tensor([[False, False, False, True], [False, False, False, False]])
    got = greedy_decode(emissions, padding, blank=0)
    assert ids_to_units(got[0], SYMBOLS) == "H I |"          # frame 3 is padding
    assert ids_to_units(got[1], SYMBOLS) == "H I | X"
    assert [ids_to_units(g, SYMBOLS) for g in greedy_decode(emissions, None, 0)] == ["H I | X"] * 2


def test_units_to_words_like_fairseq_letter_post_process():
    assert units_to_words("H I | Y O U |") == "HI YOU"
    assert units_to_words("| H I | | Y O U") == "HI YOU"
    assert units_to_words("") == ""
    assert ids_to_units([IDX["<s>"], IDX["A"], IDX["</s>"]], SYMBOLS, skip={0, 1, 2}) == "A"


def _parse_arpa(text):
    probs, bows = {}, {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and re.fullmatch(r"-?\d+\.\d+", fields[0]):
            key = tuple(fields[1].split())
            probs[key] = 10 ** float(fields[0])
            if len(fields) == 3:
                bows[key[0]] = 10 ** float(fields[2])
    return probs, bows


def test_bigram_arpa_conditionals_sum_to_one():
    sentences = [s.split() for s in ["THE CAT RUNS", "A CAT SLEEPS", "THE DOG RUNS", "MY DOG SLEEPS"]]
    text = bigram_arpa(sentences)
    assert "ngram 1=10" in text and "ngram 2=13" in text
    probs, bows = _parse_arpa(text)
    vocab = [k[0] for k in probs if len(k) == 1 and k[0] != "<s>"]
    assert sum(probs[(w,)] for w in vocab) == pytest.approx(1.0, abs=1e-5)
    for context in ["<s>", "THE", "CAT", "RUNS"]:
        total = sum(probs.get((context, w), bows.get(context, 1.0) * probs[(w,)]) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-5), context


def test_lexicon_lm_decoder_fixes_a_greedy_misspelling(tmp_path):
    """Frames that greedy reads as "KAT DOG" (C a close second to K) decode to the lexicon
    words CAT DOG; frames past the given valid length (padding) are not decoded."""
    pytest.importorskip("flashlight.lib.text.decoder")
    from d2v_plugin.asr.lm_decoder import make_decoder

    sentences = [s.split() for s in ["THE CAT RUNS", "A CAT SLEEPS", "THE DOG RUNS", "CAT DOG"]]
    arpa, lexicon = write_lm(sentences, str(tmp_path))
    frames = [c for s in "KAT|DOG|" for c in (s, "<s>")]
    emissions = torch.full((1, len(frames), len(SYMBOLS)), -10.0)
    for t, s in enumerate(frames):
        emissions[0, t, IDX[s]] = -0.1
    emissions[0, 0, IDX["C"]] = -1.0
    emissions = emissions.log_softmax(-1)
    greedy = units_to_words(ids_to_units(greedy_decode(emissions, None, 0)[0], SYMBOLS))
    assert greedy == "KAT DOG"
    decoder = make_decoder(SYMBOLS, blank=0, silence=IDX["|"], lexicon=lexicon, lm=arpa)
    (_, words), = decoder.decode(emissions, [len(frames)])
    assert words == ["CAT", "DOG"]
    (_, words), = decoder.decode(emissions, [8])   # "K _ A _ T _ | _" only
    assert words == ["CAT"]
