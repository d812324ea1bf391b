"""The pretrained-vs-random-init classification comparison (examples/classification_benefit.py)
runs end to end on a reduced budget for text and images (the measured comparisons and their
tables are in the README; no margin is asserted here)."""
import json

import pytest

from cli_utils import REPO, run_python

pytestmark = pytest.mark.slow


def test_text_benefit_scores_every_sentence_for_both_initialisations(text_pipeline_prepared,
                                                                       text_pipeline_trained, tmp_path):
    _, corpus, data_bin = text_pipeline_prepared
    checkpoint = text_pipeline_trained[0] / "ckpt" / "checkpoint_last.pt"
    out = run_python(f"""
import sys
sys.path.insert(0, {str(REPO / 'examples')!r})
from classification_benefit import main
main(["text", "--data", {str(corpus)!r}, "--data-bin", {str(data_bin)!r}, "--work-dir", {str(tmp_path)!r},
      "--pretrained", {str(checkpoint)!r}, "--seeds", "1", "2",
      "--finetune-override", "optimization.max_update=20", "--finetune-override", "lr_scheduler.warmup_updates=2"])
""", timeout=1200)
    report = json.loads((tmp_path / "results.json").read_text())
    prep = json.loads((tmp_path / "topic-bin" / "classification_prep.json").read_text())
    assert [(r["init"], r["seed"]) for r in report["runs"]] == [
        ("pretrained", 1), ("random init", 1), ("pretrained", 2), ("random init", 2)]
    for r in report["runs"]:
        for split in ("valid", "test"):
            assert r[split]["total"] == prep["splits"][split]["kept"]  # every sentence scored
            assert 0 <= r[split]["correct"] <= r[split]["total"]
    assert set(report["summary"]) == {"pretrained", "random init"}
    assert report["summary"]["pretrained"]["seeds"] == 2
    assert "| **random init, mean of 2** |" in out
    # the two initialisations really differ: one loaded the pretrained encoder, the other did not
    logs = [(tmp_path / name / "train.log").read_text() for name in ("pretrained_seed1", "random_seed1")]
    assert "loaded the pretrained encoder" in logs[0] and "no_pretrained_weights" in logs[1]

    # --inits + --reuse: one init only, its finished fine-tunings scored again, not retrained
    best = tmp_path / "random_seed1" / "checkpoint_best.pt"
    stamp = best.stat().st_mtime_ns
    run_python(f"""
import sys
sys.path.insert(0, {str(REPO / 'examples')!r})
from classification_benefit import main
main(["text", "--data", {str(corpus)!r}, "--data-bin", {str(data_bin)!r}, "--work-dir", {str(tmp_path)!r},
      "--pretrained", {str(checkpoint)!r}, "--seeds", "1", "2", "--inits", "random init", "--reuse"])
""", timeout=600)
    again = json.loads((tmp_path / "results.json").read_text())
    assert [(r["init"], r["seed"]) for r in again["runs"]] == [("random init", 1), ("random init", 2)]
    assert [r["test"] for r in again["runs"]] == [r["test"] for r in report["runs"] if r["init"] == "random init"]
    assert best.stat().st_mtime_ns == stamp and set(again["summary"]) == {"random init"}


def test_image_benefit_pretrains_then_scores_every_image_for_both_initialisations(tmp_path):
    import make_image_corpus

    digits = tmp_path / "digits"
    make_image_corpus.make_corpus(digits, size=32, seed=1)
    out = run_python(f"""
import sys
sys.path.insert(0, {str(REPO / 'examples')!r})
from classification_benefit import main
main(["image", "--data", {str(digits)!r}, "--work-dir", {str(tmp_path / 'work')!r}, "--pretrain-updates", "10",
      "--seeds", "1", "--finetune-override", "optimization.max_update=10",
      "--finetune-override", "lr_scheduler.warmup_updates=1"])
""", timeout=1200)
    report = json.loads((tmp_path / "work" / "results.json").read_text())
    assert report["modality"] == "image" and report["classes"] == [str(i) for i in range(10)]
    assert (tmp_path / "work" / "pretrain" / "checkpoint_last.pt").exists()  # pretrained by the script
    for r in report["runs"]:
        for split in ("valid", "test"):
            assert r[split]["total"] == sum(1 for _ in (digits / split).rglob("*.png"))
    assert "| **pretrained, mean of 1** |" in out
