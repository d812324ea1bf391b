"""examples/make_docstring_text.py: prose sentences from the stdlib's (and optionally the installed
packages') docstrings, none of the excluded lines, no duplicates, the same every run; and the
labelled module task built from the same sentences."""
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


def test_module_task_is_a_stratified_disjoint_split_labelled_by_stdlib_package(tmp_path):
    from make_docstring_text import make_module_task, module_sentences

    summary = make_module_task(tmp_path / "m", num_classes=4, seed=3)
    read = lambda name: (tmp_path / "m" / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    labelled = module_sentences()
    sizes = sorted(((len(v), k) for k, v in labelled.items()), reverse=True)
    assert read("classes.txt") == summary["classes"] == [k for _, k in sizes[:4]]
    owner = {s: m for m, sentences in labelled.items() for s in sentences}
    splits = {split: list(zip(read(f"{split}.txt"), read(f"{split}.label"))) for split in ("train", "valid", "test")}
    assert all(owner[s] == m for rows in splits.values() for s, m in rows)  # each line keeps its module
    texts = [set(s for s, _ in rows) for rows in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert sum(map(len, texts)) == len(owner)  # every sentence in exactly one split
    for module in summary["classes"]:  # stratified: 20 % of each class in valid and in test
        n = len(labelled[module])
        for split in ("valid", "test"):
            assert sum(m == module for _, m in splits[split]) == round(0.2 * n)
    assert summary["splits"]["test"]["in_classes"] > 500
    assert make_module_task(tmp_path / "again", num_classes=4, seed=3) == summary
    assert read("test.txt") == (tmp_path / "again" / "test.txt").read_text(encoding="utf-8").splitlines()


def test_site_packages_adds_installed_packages_docstrings_minus_tests_and_excluded(tmp_path, monkeypatch):
    import make_docstring_text as mdt

    site = tmp_path / "site-packages"
    (site / "fancypkg" / "tests").mkdir(parents=True)
    (site / "fancypkg" / "__init__.py").write_text(
        '"""The fancy package turns plain numbers into colourful little pictures. '
        'It keeps every picture it draws in a cache until the process exits."""\n')
    (site / "fancypkg" / "tests" / "test_draw.py").write_text(
        '"""This sentence lives in a test module and must never be used."""\n')
    (site / "single.py").write_text(
        'def f():\n    """Return the number of pictures that were drawn so far today."""\n')
    monkeypatch.setattr(mdt, "site_packages_roots", lambda: [site])
    excluded = tmp_path / "exclude.txt"
    excluded.write_text("It keeps every picture it draws in a cache until the process exits.\n")

    stdlib_only = mdt.make_docstring_text(tmp_path / "a")
    both = mdt.make_docstring_text(tmp_path / "b", [excluded], site_packages=True)
    lines = (tmp_path / "b" / "unlabelled.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:stdlib_only["sentences"]] == \
        (tmp_path / "a" / "unlabelled.txt").read_text(encoding="utf-8").splitlines()
    assert lines[stdlib_only["sentences"]:] == [
        "The fancy package turns plain numbers into colourful little pictures.",
        "Return the number of pictures that were drawn so far today."]
    assert both["words_per_source"]["fancypkg"] == 10 and both["words_per_source"]["single"] == 11
    assert both["dropped_as_in_exclude"] == 1
