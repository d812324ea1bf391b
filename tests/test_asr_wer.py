"""d2v_plugin.asr.wer against hand-computed cases."""
import math

import pytest

from d2v_plugin.asr.wer import ErrorRate, cer, char_errors, wer, word_errors


@pytest.mark.parametrize("ref, hyp, errors, ref_len", [
    ("A B C", "A B C", 0, 3),                      # exact
    ("A B C", "A X C", 1, 3),                      # one substitution
    ("A B", "A B C", 1, 2),                        # one insertion
    ("A B C D", "A C D", 1, 4),                    # one deletion
    ("A B C", "", 3, 3),                           # empty hypothesis: all deletions
    ("THE CAT SAT ON THE MAT", "THE CAT SIT ON MAT TODAY", 3, 6),  # S + D + I
    ("A  B\tC ", " A B C", 0, 3),                  # whitespace is only a separator
    ("HELLO", "hello", 1, 1),                      # case is not normalised
])
def test_word_errors_hand_computed(ref, hyp, errors, ref_len):
    e = word_errors(ref, hyp)
    assert (e.errors, e.ref_len) == (errors, ref_len)
    assert e.rate == pytest.approx(100.0 * errors / ref_len)


def test_empty_reference_rules():
    assert word_errors("", "").rate == 0.0
    e = word_errors("", "A B")
    assert (e.errors, e.ref_len) == (2, 0) and math.isinf(e.rate)
    # inside a corpus an empty reference's hypothesis words are plain insertions
    assert wer(["A B", ""], ["A B", "C"]) == ErrorRate(1, 2)
    assert wer(["A B", ""], ["A B", "C"]).rate == pytest.approx(50.0)


def test_corpus_wer_pools_errors_instead_of_averaging_rates():
    r = wer(["A B C D", "E"], ["A B C D", "F"])
    assert (r.errors, r.ref_len) == (1, 5)
    assert r.rate == pytest.approx(20.0)   # the mean of per-utterance rates would be 50


def test_cer_counts_characters_and_spaces():
    assert char_errors("CAT", "CUT") == ErrorRate(1, 3)
    assert char_errors("AB CD", "ABCD") == ErrorRate(1, 5)     # a lost word boundary is one error
    assert char_errors("AB  CD", "AB CD") == ErrorRate(0, 5)
    assert cer(["CAT", "DOG"], ["CUT", ""]) == ErrorRate(4, 6)


def test_one_hypothesis_per_reference_is_required():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["A", "B"], ["A"])


def test_error_rate_str():
    assert str(ErrorRate(1, 3)) == "33.33% (1/3)"
