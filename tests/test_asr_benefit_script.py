"""The pretrained-vs-random-init ASR comparison runs end to end on a reduced budget (the full
budget and its table are in the README; the margin is asserted only there)."""
import json
import sys

import pytest

from cli_utils import REPO, run_python

sys.path.insert(0, str(REPO / "examples"))
import asr_pretraining_benefit as AB  # noqa: E402

pytestmark = pytest.mark.slow


def test_benefit_script_reports_test_wer_for_both_initialisations(speech_corpus, tmp_path):
    out = run_python(f"""
import sys
sys.path.insert(0, {str(REPO / 'examples')!r})
from asr_pretraining_benefit import main
main(["--data", {str(speech_corpus)!r}, "--work-dir", {str(tmp_path)!r},
      "--pretrain-updates", "60", "--finetune-updates", "40", "--lm-weights", "0.5", "1"])
""", timeout=1200)
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert set(results) == {"pretrained (data2vec 2.0, tiny_audio)", "random init"}
    for r in results.values():
        assert 0 <= r["test_wer"] <= 100 and 0 <= r["test_cer"] <= 100
        # lexicon + bigram LM decoding (the lm extra is installed by make / CI), weight from valid
        assert r["lm_weight"] in (0.5, 1.0)
        assert 0 <= r["test_wer_lm"] <= 100 and 0 <= r["valid_wer_lm"] <= 100
    n_test = len((speech_corpus / "test.wrd").read_text().splitlines())
    for run in ("finetune_pretrained", "finetune_random"):
        hyps = (tmp_path / run / "decode" / "hypo.word-test.txt").read_text().splitlines()
        assert len(hyps) == n_test
        lm_hyps = (tmp_path / run / "decode_lm" / "test" / "hypo.word-test.txt").read_text().splitlines()
        assert len(lm_hyps) == n_test
    # the LM only knows words of the training transcripts
    train_words = set((speech_corpus / "train.wrd").read_text().split())
    lexicon = (tmp_path / "lm" / "lexicon.txt").read_text().splitlines()
    assert {line.split()[0] for line in lexicon} == train_words
    assert "| random init |" in out


def test_label_minutes_keeps_the_first_utterances_that_fit_and_links_the_rest(tmp_path):
    data = tmp_path / "corpus"
    data.mkdir()
    seconds = [30, 20, 40, 5]
    (data / "train.tsv").write_text("/root\n" + "".join(f"train/{i}.wav\t{s * 16000}\n" for i, s in enumerate(seconds)))
    (data / "train.ltr").write_text("".join(f"A {i} |\n" for i in range(4)))
    (data / "train.wrd").write_text("".join(f"W{i}\n" for i in range(4)))
    (data / "valid.tsv").write_text("/root\n")
    (data / "dict.ltr.txt").write_text("A 1\n")
    assert AB.labelled_subset(data, None, tmp_path / "unused") == data

    out = AB.labelled_subset(data, 1.0, tmp_path / "one_minute")  # 30 + 20 s fit, the 40 s one does not
    assert (out / "train.tsv").read_text().splitlines() == ["/root", "train/0.wav\t480000", "train/1.wav\t320000"]
    assert (out / "train.wrd").read_text().split() == ["W0", "W1"]
    assert len((out / "train.ltr").read_text().splitlines()) == 2
    assert (out / "valid.tsv").resolve() == (data / "valid.tsv").resolve()
    assert (out / "dict.ltr.txt").read_text() == "A 1\n"
    assert json.loads((out / "subset.json").read_text())["utterances"] == 2

    with pytest.raises(SystemExit, match="not even one"):
        AB.labelled_subset(data, 0.1, tmp_path / "too_short")
    (data / "train.tsv").write_text("/root\ntrain/0.wav\tmany\n")
    with pytest.raises(SystemExit, match=r"train.tsv:2"):
        AB.labelled_subset(data, 1.0, tmp_path / "bad")
