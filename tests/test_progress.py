"""The live progress line of the console scripts (``d2v_plugin.console.Progress``).

Unit tests drive it with a fake clock; the command tests run the real commands in-process
with the "work longer than" threshold set to 0 (the tiny inputs finish in well under the
2 s after which a user sees the line) and read stderr.
"""
import io

import pytest

from d2v_plugin import console
from d2v_plugin.asr import ngram
from d2v_plugin.text import classification_prep, prepare
from make_text_corpus import make_corpus


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_short_work_shows_nothing():
    clock, out = FakeClock(), io.StringIO()
    with console.Progress("encoding", 10, "lines", stream=out, clock=clock) as p:
        for _ in range(10):
            clock.now += 0.1
            p.advance()
    assert out.getvalue() == ""


def test_on_a_terminal_the_line_is_redrawn_in_place_and_ends_with_the_final_count():
    clock, out = FakeClock(), Terminal()
    with console.Progress("extracting features", 4, "utterances", stream=out, clock=clock) as p:
        for _ in range(4):
            clock.now += 1.0
            p.advance()
    text = out.getvalue()
    assert text.startswith("\r[") and text.endswith("\n") and text.count("\n") == 1
    draws = text.rstrip("\n").split("\r")[1:]
    assert draws == ["[###############...............] extracting features 2/4 utterances 2s",
                     "[######################........] extracting features 3/4 utterances 3s",
                     "[##############################] extracting features 4/4 utterances 4s"]


def test_in_a_log_file_lines_are_rare_and_the_final_count_is_written_once(monkeypatch):
    monkeypatch.setattr(console, "PROGRESS_LOG_EVERY_SECONDS", 30.0)
    clock, out = FakeClock(), io.StringIO()
    with console.Progress("counting n-grams", 100, "sentences", stream=out, clock=clock) as p:
        for _ in range(100):
            clock.now += 1.0
            p.advance()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split("] ")[1] for line in lines] == [
        "counting n-grams 2/100 sentences 2s", "counting n-grams 32/100 sentences 32s",
        "counting n-grams 62/100 sentences 62s", "counting n-grams 92/100 sentences 92s",
        "counting n-grams 100/100 sentences 100s"]


def test_unknown_total_shows_a_count_without_bar_and_disabled_shows_nothing():
    clock, out, silent = FakeClock(), io.StringIO(), io.StringIO()
    p = console.Progress("reading transcripts", None, "lines", stream=out, clock=clock)
    q = console.Progress("reading transcripts", None, "lines", enabled=False, stream=silent, clock=clock)
    clock.now += 3.0
    for _ in range(7):
        p.advance()
        q.advance()
    p.close()
    p.close()  # closing twice writes nothing more
    q.close()
    assert out.getvalue() == "reading transcripts 1 lines 3s\nreading transcripts 7 lines 3s\n"
    assert silent.getvalue() == "" and q.done == 7


@pytest.fixture
def always_show(monkeypatch):
    monkeypatch.setattr(console, "PROGRESS_AFTER_SECONDS", 0.0)
    monkeypatch.setattr(console, "PROGRESS_LOG_EVERY_SECONDS", 1e9)  # only the first and last lines


def test_d2v_lm_shows_reading_and_counting(always_show, tmp_path, capsys):
    text = tmp_path / "train.wrd"
    text.write_text("HELLO WORLD\n\nHELLO THERE\nA B C\n", encoding="utf-8")
    ngram.main([str(text), "--out-dir", str(tmp_path / "lm")])
    err = capsys.readouterr().err
    assert "reading transcripts 4 lines" in err             # the blank line is read, not kept
    assert "[##############################] counting n-grams 3/3 sentences" in err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("progress_corpus")
    make_corpus(out, seed=1)
    return out


def test_d2v_text_prep_and_classification_prep_show_encoding(always_show, corpus, tmp_path, capsys):
    train_lines = prepare.count_lines(str(corpus / "train.txt"))
    assert train_lines == len((corpus / "train.txt").read_text(encoding="utf-8").splitlines())
    prepare.main(["--train", str(corpus / "train.txt"), "--valid", str(corpus / "valid.txt"),
                  "--out-dir", str(tmp_path / "prep"), "--vocab-size", "400"])
    err = capsys.readouterr().err
    assert f"encoding train {train_lines}/{train_lines} lines" in err
    assert "encoding valid" in err

    summary = classification_prep.main(["--corpus", str(corpus), "--data-bin", str(tmp_path / "prep" / "data-bin"),
                                        "--out-dir", str(tmp_path / "cls")])
    err = capsys.readouterr().err
    for split, stats in summary["splits"].items():
        labelled = stats["kept"] + stats["empty"]
        assert f"encoding {split} {labelled}/{labelled} sentences" in err


def test_in_process_callers_get_no_progress_by_default(always_show, corpus, tmp_path, capsys):
    prepare.prepare_text(str(corpus / "train.txt"), str(corpus / "valid.txt"), str(tmp_path / "prep"),
                         vocab_size=400)
    assert "encoding" not in capsys.readouterr().err


def test_count_lines_counts_an_unterminated_last_line(tmp_path):
    for content, expected in [(b"", 0), (b"a\n", 1), (b"a\nb", 2), (b"\n\n", 2)]:
        path = tmp_path / "f.txt"
        path.write_bytes(content)
        assert prepare.count_lines(str(path)) == expected


@pytest.mark.slow
def test_d2v_features_shows_extraction(always_show, speech_corpus, tmp_path, capsys):
    from cli_utils import run_hydra_train
    from d2v_plugin.asr import extract_features

    run_hydra_train("pretraining", "tiny_audio", [
        f"task.data={speech_corpus}", f"checkpoint.save_dir={tmp_path / 'pre'}",
        "optimization.max_update=2", "lr_scheduler.warmup_updates=1", "dataset.disable_validation=true",
        "dataset.max_tokens=96000"], cwd=tmp_path)
    capsys.readouterr()
    result = extract_features.main([str(tmp_path / "pre" / "checkpoint_last.pt"), "--data", str(speech_corpus),
                                    "--split", "valid", "--out-dir", str(tmp_path / "feats"), "--cpu"])
    n = len(result.files)
    assert n > 0
    assert f"[##############################] extracting features {n}/{n} utterances" in capsys.readouterr().err
