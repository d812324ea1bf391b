"""Text data on real files: the documentation corpus, d2v-text-prep, the block dataset and its
collater (the multi-mask batch expander), the labelled-line encoder; bad input."""
import json
import logging
import sys

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary, data_utils

from d2v_plugin.data.expander import BatchExpander
from d2v_plugin.data.text_dataset import (TextPretrainingDataset, encode_labelled_lines,
                                          load_text_blocks, load_text_dictionary)
from d2v_plugin.text import prepare
from d2v_plugin.text.prepare import TextPrepError
from make_text_corpus import SPLITS, make_corpus

VALID_LINES = [
    "The try statement specifies exception handlers for a group of statements.",
    "",                                          # 2: blank
    "   \t ",                                    # 3: whitespace only
    "A string 😀😀 with emoji and 世界 characters.",  # 4: 4 characters outside the model
    "\x01\x02",                                  # 5: control characters only: nothing left
    "Every object has an identity, a type and a value.",
]
UNSEEN = "😀世界"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("text_corpus")
    make_corpus(out, seed=1)
    return out


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("text_prep")
    valid = out / "valid_raw.txt"
    valid.write_text("\n".join(VALID_LINES) + "\n", encoding="utf-8")
    result = prepare.main(["--train", str(corpus / "train.txt"), "--valid", str(valid),
                           "--test", str(corpus / "test.txt"), "--out-dir", str(out),
                           "--vocab-size", "400"])
    return out, result


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


# ---- the corpus -----------------------------------------------------------------------------
def test_corpus_is_deterministic_and_its_split_follows_the_seed(corpus, tmp_path):
    again = make_corpus(tmp_path / "again", seed=1)
    assert not again["cached"]
    for split in SPLITS:
        for ext in ("txt", "label"):
            assert (tmp_path / "again" / f"{split}.{ext}").read_bytes() == (corpus / f"{split}.{ext}").read_bytes()
    assert make_corpus(tmp_path / "again", seed=1)["cached"]
    make_corpus(tmp_path / "other", seed=2)
    assert lines(tmp_path / "other" / "valid.txt") != lines(corpus / "valid.txt")
    assert sorted(sum((lines(tmp_path / "other" / f"{s}.txt") for s in SPLITS), [])) == \
        sorted(sum((lines(corpus / f"{s}.txt") for s in SPLITS), []))   # same sentences


def test_corpus_splits_have_a_label_per_line_and_every_class_in_every_split(corpus):
    from pydoc_data.topics import topics

    classes = lines(corpus / "classes.txt")
    assert len(classes) == 10 and set(classes) <= set(topics)
    counts, seen = {}, set()
    for split in SPLITS:
        text, labels = lines(corpus / f"{split}.txt"), lines(corpus / f"{split}.label")
        assert len(text) == len(labels) > 100
        assert all(t.strip() == t and len(t.split()) >= 5 for t in text)   # no empty or tiny lines
        assert set(labels) <= set(topics)
        assert not seen & set(text)                                       # no sentence in two splits
        seen |= set(text)
        counts[split] = {c: labels.count(c) for c in classes}
        assert min(counts[split].values()) >= 5
    assert sum(counts["train"].values()) > 4 * sum(counts["test"].values())
    stamp = json.loads((corpus / "corpus.json").read_text())
    assert stamp["classes"] == classes and stamp["splits"]["train"]["lines"] == len(lines(corpus / "train.txt"))


def test_corpus_text_is_prose_not_markup():
    from make_text_corpus import split_sentences, topic_sentences

    text = ("Heading\n*******\n\nThe \"try\" statement specifies exception handlers,\ne.g. for a "
            "*non-\nvirtual* class. It is described in this section [1].\n\nFor example:\n\n   try:\n"
            "       foo()\n   finally:\n       bar()\n\n>>> 1 + 1\n2\n")
    assert topic_sentences(text) == ['The "try" statement specifies exception handlers, e.g. for a '
                                     'non-virtual class.', "It is described in this section."]
    assert split_sentences('See "try". It is fine, e.g. Python. Ask J. Smith.') == [
        'See "try".', "It is fine, e.g. Python.", "Ask J. Smith."]   # not after e.g. or initials


# ---- d2v-text-prep --------------------------------------------------------------------------
def test_prep_writes_a_dictionary_and_data_bin_that_fairseq_reads(prepared, corpus):
    out, result = prepared
    data_bin = out / "data-bin"
    for name in ["dict.txt", "spm.model", "text_prep.json"] + [f"{s}.{e}" for s in SPLITS for e in ("bin", "idx")]:
        assert (data_bin / name).is_file(), name
    dictionary = Dictionary.load(str(data_bin / "dict.txt"))
    assert len(dictionary) == result.dictionary_size == 4 + 397   # fairseq specials + pieces
    assert "<mask>" not in dictionary.indices                      # added at load, like masked_lm
    for split in SPLITS:
        data = data_utils.load_indexed_dataset(str(data_bin / split), dictionary)
        assert len(data) == result.splits[split].kept
        assert all(int(data[i][-1]) == dictionary.eos() for i in range(len(data)))
    assert result.splits["test"].kept == len(lines(corpus / "test.txt"))
    assert result.splits["train"].unk_chars == 0


def test_prep_skips_empty_lines_and_counts_characters_outside_the_model(prepared, corpus):
    assert not set(UNSEEN) & set((corpus / "train.txt").read_text(encoding="utf-8"))
    out, result = prepared
    valid = result.splits["valid"]
    assert (valid.lines, valid.kept, valid.empty, valid.empty_examples) == (6, 3, 3, [2, 3, 5])
    assert (valid.unk_lines, valid.unk_chars, valid.unk_examples) == (1, 4, [4])   # 😀😀 and 世界
    dictionary = Dictionary.load(str(out / "data-bin" / "dict.txt"))
    data = data_utils.load_indexed_dataset(str(out / "data-bin" / "valid"), dictionary)
    unk_counts = [int((data[i] == dictionary.unk()).sum()) for i in range(len(data))]
    assert unk_counts == [0, 2, 0]   # one <unk> per run of unseen characters
    summary = json.loads((out / "data-bin" / "text_prep.json").read_text())
    assert summary["splits"]["valid"]["empty"] == 3


def test_prep_warns_about_empty_lines_and_unknown_characters(tmp_path, caplog):
    train = tmp_path / "train.txt"
    train.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20)
    valid = tmp_path / "valid.txt"
    valid.write_text("the cat\n\nthe 🐍 sat\n")
    with caplog.at_level(logging.WARNING, logger="d2v_plugin.text.prepare"):
        result = prepare.prepare_text(str(train), str(valid), str(tmp_path / "out"), vocab_size=20)
    assert result.splits["valid"].kept == 2
    assert "skipped 1 empty line(s)" in caplog.text and "line(s) 2" in caplog.text
    assert "1 character(s) in 1 line(s) are not in the BPE model" in caplog.text


def test_prep_byte_fallback_spells_unknown_characters_as_bytes(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20)
    valid = tmp_path / "valid.txt"
    valid.write_text("the 🐍 sat\n")
    result = prepare.prepare_text(str(train), str(valid), str(tmp_path / "out"), vocab_size=290,
                                  byte_fallback=True)
    assert result.splits["valid"].unk_chars == 0
    assert "<0xF0>" in (tmp_path / "out" / "bpe" / "valid.bpe").read_text()


def test_prep_errors_name_the_file(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("some text here\n" * 5)
    with pytest.raises(FileNotFoundError, match="train text not found: .*missing.txt"):
        prepare.prepare_text(str(tmp_path / "missing.txt"), str(good), str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="valid text not found"):
        prepare.prepare_text(str(good), str(tmp_path / "missing.txt"), str(tmp_path / "o"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    with pytest.raises(TextPrepError, match="empty.txt: the training text is empty"):
        prepare.prepare_text(str(empty), str(good), str(tmp_path / "o"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(TextPrepError, match=r"latin1.txt:2: not UTF-8"):
        prepare.prepare_text(str(latin1), str(good), str(tmp_path / "o"))
    with pytest.raises(TextPrepError, match="--vocab-size 5000 is too large"):
        prepare.prepare_text(str(good), str(good), str(tmp_path / "o"), vocab_size=5000)


def test_prep_console_script_reports_user_errors_in_one_line(tmp_path, monkeypatch, capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "argv", ["d2v-text-prep", "--train", str(tmp_path / "nope.txt"),
                                      "--valid", str(tmp_path / "nope.txt"), "--out-dir", str(tmp_path)])
    try:
        status = prepare.cli()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert status == 1
    assert "d2v-text-prep: error: train text not found" in capsys.readouterr().err


# ---- blocks and the collater ----------------------------------------------------------------
def test_dictionary_appends_mask_after_the_pieces(prepared):
    out, result = prepared
    d = load_text_dictionary(str(out / "data-bin"))
    assert [d[i] for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert d.index("<mask>") == len(d) - 1 == result.dictionary_size


def test_blocks_are_bos_plus_the_token_stream(prepared):
    out, _ = prepared
    d = load_text_dictionary(str(out / "data-bin"))
    stream = data_utils.load_indexed_dataset(str(out / "data-bin" / "test"), d)
    blocks = load_text_blocks(str(out / "data-bin"), "test", d, tokens_per_sample=16)
    assert all(int(blocks[i][0]) == d.bos() and len(blocks[i]) <= 16 for i in range(len(blocks)))
    assert (blocks.sizes[:-1] == 16).all() and list(blocks.sizes) == [len(blocks[i]) for i in range(len(blocks))]
    assert torch.equal(torch.cat([blocks[i][1:] for i in range(len(blocks))]),
                       torch.cat([stream[i] for i in range(len(stream))]).long())
    complete = load_text_blocks(str(out / "data-bin"), "test", d, tokens_per_sample=64, break_mode="complete")
    ends = [int(complete[i][-1]) for i in range(len(complete))]
    assert ends.count(d.eos()) == len(ends)   # whole lines only (no test line exceeds 63 tokens)
    with pytest.raises(ValueError, match="break_mode must be one of"):
        load_text_blocks(str(out / "data-bin"), "test", d, 16, break_mode="eos")
    with pytest.raises(FileNotFoundError, match="text split not found: .*nosuch"):
        load_text_blocks(str(out / "data-bin"), "nosuch", d, 16)


def _dataset(prepared, clone_batch=1, mask_sampler=None, **kwargs):
    out, _ = prepared
    d = load_text_dictionary(str(out / "data-bin"))
    blocks = load_text_blocks(str(out / "data-bin"), "test", d, tokens_per_sample=32)
    expander = BatchExpander(clone_batch, mask_sampler) if mask_sampler is not None else None
    return TextPretrainingDataset(blocks, d, expander=expander, **kwargs), d


def test_collater_pads_right_and_marks_padding(prepared):
    ds, d = _dataset(prepared)
    last = len(ds) - 1
    assert ds.sizes[last] < 32                       # the stream's tail: a short block
    batch = ds.collater([ds[0], ds[last]])
    source, padding = batch["net_input"]["source"], batch["net_input"]["padding_mask"]
    assert source.shape == (2, 32) and source.dtype == torch.long
    assert (source[:, 0] == d.bos()).all()
    assert torch.equal(padding, source.eq(d.pad()))
    n = int(ds.sizes[last])
    assert int(source[1, n - 1]) == d.eos() and (source[1, n:] == d.pad()).all() and not padding[1, :n].any()
    assert not padding[0].any()
    assert batch["ntokens"] == 32 + n and batch["nsentences"] == 2
    assert batch["id"].tolist() == [0, last]
    assert "precomputed_mask" not in batch["net_input"]


def simple_sampler(rows, length, generator):
    return torch.rand(rows, length, generator=generator) < 0.5


def test_collater_samples_clone_batch_masks_per_sample_deterministically(prepared):
    calls = []

    def sampler(rows, length, generator):
        calls.append((rows, length))
        return simple_sampler(rows, length, generator)

    ds, _ = _dataset(prepared, clone_batch=4, mask_sampler=sampler, seed=3)
    samples = [ds[i] for i in (5, 2, 7)]
    mask = ds.collater(samples)["net_input"]["precomputed_mask"]
    assert mask.shape == (12, 32) and mask.dtype == torch.bool and calls == [(12, 32)]
    assert torch.equal(ds.collater(samples)["net_input"]["precomputed_mask"], mask)   # same seed, epoch, ids
    ds.set_epoch(2)
    assert not torch.equal(ds.collater(samples)["net_input"]["precomputed_mask"], mask)
    other, _ = _dataset(prepared, clone_batch=4, mask_sampler=sampler, seed=4)
    assert not torch.equal(other.collater(samples)["net_input"]["precomputed_mask"], mask)
    assert not torch.equal(_dataset(prepared, clone_batch=4, mask_sampler=sampler, seed=3)[0]
                           .collater([ds[i] for i in (5, 2, 8)])["net_input"]["precomputed_mask"], mask)


def test_collater_rejects_a_sampler_of_the_wrong_shape(prepared):
    ds, _ = _dataset(prepared, clone_batch=2, mask_sampler=lambda r, t, g: torch.zeros(r, t + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask_sampler must return a \(4, 32\) bool mask"):
        ds.collater([ds[0], ds[1]])


def test_order_is_a_seeded_shuffle_that_changes_with_the_epoch(prepared):
    ds, _ = _dataset(prepared)
    first = ds.ordered_indices()
    assert sorted(first.tolist()) == list(range(len(ds)))
    assert np.array_equal(first, ds.ordered_indices())
    ds.set_epoch(2)
    assert not np.array_equal(first, ds.ordered_indices())
    assert ds.can_reuse_epoch_itr_across_epochs is False
    assert np.array_equal(ds.num_tokens_vec(np.array([0, 1])), ds.sizes[:2])


def test_batches_equal_fairseq_masked_lm_d2v2_multi_batches(prepared):
    """The folder loads in fairseq's own masked_lm task, and our collater gives its batches."""
    from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask

    out, _ = prepared
    cfg = MaskedLMConfig(data=str(out / "data-bin"), tokens_per_sample=32, d2v2_multi=True,
                         skip_masking=True, seed=1)
    task = MaskedLMTask.setup_task(cfg)
    task.load_dataset("test")
    theirs = task.datasets["test"]
    ours, d = _dataset(prepared, shuffle=False)
    assert len(task.source_dictionary) == len(d) and task.mask_idx == d.index("<mask>")
    ids = list(range(len(ours)))
    a, b = theirs.collater([theirs[i] for i in ids]), ours.collater([ours[i] for i in ids])
    for key in ("source", "padding_mask"):
        assert torch.equal(a["net_input"][key], b["net_input"][key])
    assert a["ntokens"] == b["ntokens"]


# ---- labelled lines for a probe -------------------------------------------------------------
def test_labelled_lines_use_the_pretraining_encoding(prepared, corpus):
    out, _ = prepared
    classes = lines(corpus / "classes.txt")
    test = encode_labelled_lines(str(corpus / "test.txt"), str(corpus / "test.label"),
                                 str(out / "data-bin"), max_tokens=48, label_names=classes)
    labels = lines(corpus / "test.label")
    assert test.label_names == classes
    assert len(test.labels) == sum(l in classes for l in labels) == len(test.line_numbers)
    assert [labels[n - 1] for n in test.line_numbers] == [classes[i] for i in test.labels]
    assert test.source.dtype == torch.long and test.source.size(1) <= 48
    assert torch.equal(test.padding_mask, test.source.eq(1)) and (test.source[:, 0] == 0).all()
    d = load_text_dictionary(str(out / "data-bin"))
    binarized = data_utils.load_indexed_dataset(str(out / "data-bin" / "test"), d)
    for row, number in enumerate(test.line_numbers[:20]):
        expected = torch.cat([torch.tensor([d.bos()]), binarized[number - 1].long()])
        if len(expected) <= 48:
            assert torch.equal(test.source[row, :len(expected)], expected)
        else:   # truncated: the start, then </s>
            assert torch.equal(test.source[row, :47], expected[:47]) and int(test.source[row, 47]) == d.eos()


def test_labelled_lines_must_match_their_labels(prepared, corpus, tmp_path):
    out, _ = prepared
    short = tmp_path / "short.label"
    short.write_text("types\n")
    with pytest.raises(ValueError, match="has 235 lines but .*short.label has 1"):
        encode_labelled_lines(str(corpus / "test.txt"), str(short), str(out / "data-bin"), 32)
