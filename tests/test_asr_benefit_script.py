"""The pretrained-vs-random-init ASR comparison runs end to end on a reduced budget (the full
budget and its table are in the README; the margin is asserted only there)."""
import json

import pytest

from cli_utils import REPO, run_python

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
