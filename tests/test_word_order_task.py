"""examples/make_word_order_task.py: every example is its source sentence, kept or with exactly
one pair of differing neighbours exchanged, labelled accordingly; deterministic per seed."""
from make_word_order_task import make_task

LINES = ["the cat sat on the mat today", "a a a a a a", "short line", "one two three four five six seven"] * 10


def test_examples_are_the_sentence_or_one_neighbour_swap(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("\n".join(LINES) + "\n")
    summary = make_task(corpus, tmp_path / "out", seed=3)
    texts = (tmp_path / "out" / "train.txt").read_text().splitlines()
    labels = (tmp_path / "out" / "train.label").read_text().splitlines()
    sources = [l for l in LINES if len(l.split()) >= 5]          # "short line" is left out
    assert len(texts) == len(labels) == len(sources)
    for text, label, source in zip(texts, labels, sources):
        a, b = text.split(), source.split()
        diff = [i for i in range(len(b)) if a[i] != b[i]]
        if label == "original":
            assert a == b
        else:
            assert label == "swapped" and len(diff) == 2 and diff[1] == diff[0] + 1
            assert a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    # "a a a a a a" has no differing neighbours: it can only stay original
    assert all(l == "original" for t, l in zip(texts, labels) if t == "a a a a a a")
    assert summary["splits"]["train"]["swapped"] > 5 and summary["splits"]["train"]["original"] > 5
    assert (tmp_path / "out" / "classes.txt").read_text().split() == ["original", "swapped"]
    again = make_task(corpus, tmp_path / "again", seed=3)
    assert (tmp_path / "again" / "train.txt").read_text() == "\n".join(texts) + "\n"
    assert again["splits"] == summary["splits"]
