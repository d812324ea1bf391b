"""examples/make_docstring_text.py: prose sentences from the stdlib's docstrings, none of the
excluded lines, no duplicates, the same every run."""
from make_docstring_text import make_docstring_text
from make_text_corpus import is_prose


def test_docstring_sentences_are_prose_deduplicated_and_skip_excluded_lines(tmp_path):
    first = make_docstring_text(tmp_path / "a")
    lines = (tmp_path / "a" / "unlabelled.txt").read_text(encoding="utf-8").splitlines()
    assert first["sentences"] == len(lines) > 1000 and len(set(lines)) == len(lines)
    assert all(is_prose(line) for line in lines[:500])
    excluded = tmp_path / "exclude.txt"
    excluded.write_text("\n".join(lines[10:20]) + "\n", encoding="utf-8")
    second = make_docstring_text(tmp_path / "b", [excluded])
    kept = (tmp_path / "b" / "unlabelled.txt").read_text(encoding="utf-8").splitlines()
    assert not set(lines[10:20]) & set(kept) and second["dropped_as_in_exclude"] >= 10
    assert kept == [line for line in lines if line not in set(lines[10:20])]
