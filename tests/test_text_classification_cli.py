"""Sentence classification on a text checkpoint through the real commands:
d2v-text-classification-prep -> fairseq-hydra-train tiny_text_classification (fairseq's own
sentence_prediction task and criterion, model data2vec_classification) -> a fine-tuned
checkpoint that loads in a fresh process after the pretrained one is gone -> fairseq-validate.
"""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from cli_utils import REPO, fairseq_validate_test, json_rows, run_hydra_train, score_in_fresh_process
from text_pipeline import BIN, ODD_LINES, run_command

pytestmark = pytest.mark.slow

FT_UPDATES = 120


@pytest.fixture(scope="module")
def topic_bin(text_pipeline_prepared):
    root, corpus, data_bin = text_pipeline_prepared
    out = root / "topic-bin"
    proc = run_command([BIN / "d2v-text-classification-prep", "--corpus", corpus, "--data-bin", data_bin,
                        "--out-dir", out], cwd=root)
    return out, json.loads((out / "classification_prep.json").read_text()), proc.stdout


def _labelled(corpus, split, classes):
    texts = (corpus / f"{split}.txt").read_text(encoding="utf-8").splitlines()
    labels = (corpus / f"{split}.label").read_text().splitlines()
    return [(t, l) for t, l in zip(texts, labels) if l in classes]


def test_prep_writes_sentence_prediction_data_with_the_pretraining_dictionary(topic_bin, text_pipeline_prepared):
    from fairseq.data import Dictionary, data_utils

    out, summary, stdout = topic_bin
    _, corpus, data_bin = text_pipeline_prepared
    classes = (corpus / "classes.txt").read_text().split()
    assert summary["classes"] == classes and summary["num_classes"] == len(classes)
    assert f"task.num_classes={len(classes)}" in stdout
    assert (out / "input0" / "dict.txt").read_bytes() == (data_bin / "dict.txt").read_bytes()
    assert [l.split()[0] for l in (out / "label" / "dict.txt").read_text().splitlines()] == classes
    label_dict = Dictionary.load(str(out / "label" / "dict.txt"))
    for split in ("train", "valid", "test"):
        rows = _labelled(corpus, split, classes)
        kept = [(t, l) for t, l in rows if t.strip()]
        s = summary["splits"][split]
        assert s["kept"] == len(kept) and s["empty"] == len(rows) - len(kept)
        labels = data_utils.load_indexed_dataset(str(out / "label" / split), label_dict)
        assert [classes[int(labels[i][0]) - label_dict.nspecial] for i in range(len(labels))] == [l for _, l in kept]
    # the odd lines appended to valid: two blank ones skipped, the one with unseen characters kept
    assert summary["splits"]["valid"]["empty"] == 2 and summary["splits"]["valid"]["unk_chars"] > 0
    assert summary["splits"]["train"]["other_label"] > 0  # topics outside the 10 classes


def test_prep_low_resource_split_keeps_a_seeded_sample_per_class(text_pipeline_prepared, topic_bin, tmp_path):
    from d2v_plugin.text.classification_prep import prepare_classification

    _, corpus, data_bin = text_pipeline_prepared
    full = topic_bin[0] / "plain"
    runs = [prepare_classification(str(corpus), str(data_bin), str(tmp_path / f"run{i}"), train_per_class=5,
                                   seed=seed) for i, seed in enumerate((7, 7, 8))]
    assert all(n == 5 for n in runs[0]["splits"]["train"]["class_counts"].values())
    sample = (tmp_path / "run0" / "plain" / "train.input0").read_text(encoding="utf-8").splitlines()
    assert len(sample) == 50 and set(sample) <= set((full / "train.input0").read_text(encoding="utf-8").splitlines())
    assert sample == (tmp_path / "run1" / "plain" / "train.input0").read_text(encoding="utf-8").splitlines()
    assert sample != (tmp_path / "run2" / "plain" / "train.input0").read_text(encoding="utf-8").splitlines()
    for split in ("valid", "test"):  # only train is sampled
        assert (tmp_path / "run0" / "plain" / f"{split}.input0").read_bytes() == (full / f"{split}.input0").read_bytes()


def test_prep_publishes_by_rename_and_leaves_identical_data_untouched(text_pipeline_prepared, tmp_path):
    """A fine-tuning reading the data keeps complete files while the folder is re-prepared."""
    from fairseq.data import Dictionary, data_utils
    from d2v_plugin.text.classification_prep import SUMMARY_NAME, prepare_classification

    _, corpus, data_bin = text_pipeline_prepared
    out = tmp_path / "topic-bin"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    full = prepare_classification(str(corpus), str(data_bin), str(out))
    train_bin = out / "input0" / "train.bin"
    written = (train_bin.stat().st_ino, train_bin.stat().st_mtime_ns)
    dictionary = Dictionary.load(str(out / "input0" / "dict.txt"))
    reading = data_utils.load_indexed_dataset(str(out / "input0" / "train"), dictionary)
    first, last = reading[0].clone(), reading[len(reading) - 1].clone()

    assert prepare_classification(str(corpus), str(data_bin), str(out)) == full
    assert (train_bin.stat().st_ino, train_bin.stat().st_mtime_ns) == written  # same data: not rewritten

    low = prepare_classification(str(corpus), str(data_bin), str(out), train_per_class=2)
    assert json.loads((out / SUMMARY_NAME).read_text()) == low
    kept = low["splits"]["train"]["kept"]
    assert kept == 2 * low["num_classes"] < full["splits"]["train"]["kept"]
    assert len(data_utils.load_indexed_dataset(str(out / "input0" / "train"), dictionary)) == kept
    # the reader opened before the swap still sees the old, complete data
    assert len(reading) == full["splits"]["train"]["kept"]
    assert torch.equal(reading[0], first) and torch.equal(reading[len(reading) - 1], last)
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["input0", "label", "plain", SUMMARY_NAME, ".prep.lock", "notes.txt"])  # no staging left


def test_two_preps_of_one_folder_at_once_both_succeed_with_consistent_data(text_pipeline_prepared, tmp_path):
    from fairseq.data import Dictionary, data_utils

    _, corpus, data_bin = text_pipeline_prepared
    out = tmp_path / "topic-bin"
    script = ("import sys; from d2v_plugin.text.classification_prep import prepare_classification; "
              "prepare_classification(*sys.argv[1:4])")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(corpus), str(data_bin), str(out)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    for proc in procs:
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, output
    summary = json.loads((out / "classification_prep.json").read_text())
    for sub in ("input0", "label"):
        dictionary = Dictionary.load(str(out / sub / "dict.txt"))
        for split, stats in summary["splits"].items():
            assert len(data_utils.load_indexed_dataset(str(out / sub / split), dictionary)) == stats["kept"]


def test_prep_refuses_labels_that_do_not_match_the_text(text_pipeline_prepared, tmp_path):
    _, corpus, data_bin = text_pipeline_prepared
    bad = tmp_path / "corpus"
    shutil.copytree(corpus, bad)
    (bad / "valid.label").write_text("\n".join((corpus / "valid.label").read_text().splitlines()[:-1]) + "\n")
    proc = subprocess.run([BIN / "d2v-text-classification-prep", "--corpus", bad, "--data-bin", data_bin,
                           "--out-dir", tmp_path / "out"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "valid.txt has" in proc.stderr and "valid.label has" in proc.stderr and "line for line" in proc.stderr


def _finetune(topic, pretrained, save_dir, cwd, extra=()):
    out, summary, _ = topic
    return run_hydra_train("finetuning", "tiny_text_classification", [
        f"task.data={out}", f"task.num_classes={summary['num_classes']}", f"model.model_path={pretrained}",
        f"checkpoint.save_dir={save_dir}", f"optimization.max_update={FT_UPDATES}",
        "lr_scheduler.warmup_updates=10", "common.log_format=json", "common.log_interval=1", *extra], cwd=cwd)


@pytest.fixture(scope="module")
def finetuned(topic_bin, text_pipeline_trained, tmp_path_factory):
    """Fine-tune from a copy of the pretrained checkpoint, then delete the copy."""
    run_dir, _, _ = text_pipeline_trained
    work = tmp_path_factory.mktemp("text_ft")
    pretrained = work / "pretrained.pt"
    shutil.copy(run_dir / "ckpt" / "checkpoint_last.pt", pretrained)
    proc = _finetune(topic_bin, pretrained, work / "ckpt", work)
    pretrained.unlink()
    log = proc.stdout + proc.stderr
    return work, json_rows(log), json_rows(log, "valid"), log


def test_finetuning_learns_the_topics(finetuned):
    _, rows, valid, _ = finetuned
    assert [int(r["num_updates"]) for r in rows] == list(range(1, FT_UPDATES + 1))
    losses = [float(r["loss"]) for r in rows]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.9 * first, f"loss did not fall: first 10 mean {first:.3f}, last 10 mean {last:.3f}"
    assert valid and "valid_accuracy" in valid[-1] and "valid_best_accuracy" in valid[-1]
    assert max(float(v["valid_accuracy"]) for v in valid) > 100 / 10 + 5  # above a uniform guess of 10 classes


def test_finetuning_starts_from_the_pretrained_encoder_and_random_init_does_not(topic_bin, text_pipeline_trained):
    """Build the model the way fairseq-hydra-train does: the encoder equals the pretrained
    student (decoder and teacher dropped); no_pretrained_weights gives the same shapes, other values."""
    from fairseq import tasks
    from omegaconf import OmegaConf

    import d2v_plugin  # noqa: F401

    out, summary, _ = topic_bin
    run_dir, _, _ = text_pipeline_trained
    ckpt = run_dir / "ckpt" / "checkpoint_last.pt"
    cfg = OmegaConf.load(REPO / "config" / "finetuning" / "tiny_text_classification.yaml")
    cfg.task.data, cfg.task.num_classes = str(out), summary["num_classes"]
    cfg.criterion = OmegaConf.create({"_name": "sentence_prediction", "regression_target": False,
                                      "classification_head_name": "sentence_classification_head"})
    cfg.common = OmegaConf.create({"seed": 1})
    task = tasks.setup_task(cfg.task)
    pretrained = torch.load(ckpt, weights_only=True)["model"]
    student = {k: v for k, v in pretrained.items() if not k.startswith("_ema") and ".decoder." not in k}

    def encoder_state(no_pretrained_weights):
        model_cfg = OmegaConf.merge(cfg.model, {"model_path": str(ckpt),
                                                "no_pretrained_weights": no_pretrained_weights})
        model = task.build_model(model_cfg)
        assert list(model.classification_heads) == ["sentence_classification_head"]
        assert model.encoder.teacher is None
        return {k[len("encoder."):]: v for k, v in model.state_dict().items() if k.startswith("encoder.")}

    loaded = encoder_state(False)
    assert sorted(loaded) == sorted(student)
    assert all(torch.equal(loaded[k], student[k]) for k in student)
    fresh = encoder_state(True)
    assert {k: v.shape for k, v in fresh.items()} == {k: v.shape for k, v in student.items()}
    assert not torch.equal(fresh["blocks.0.attn.qkv.weight"], student["blocks.0.attn.qkv.weight"])


def test_finetuned_checkpoint_loads_without_the_pretrained_one_and_fairseq_validate_scores_every_sentence(
        finetuned, topic_bin):
    """The pretrained checkpoint was deleted after fine-tuning started: the fine-tuned one
    still loads in a fresh process (its model config embeds the pretraining config), and
    fairseq-validate's test accuracy is the one counted by hand over every test sentence."""
    work, _, _, _ = finetuned
    out, summary, _ = topic_bin
    best = work / "ckpt" / "checkpoint_best.pt"
    info = score_in_fresh_process(best)
    assert info["model"] == "Data2VecClassificationModel" and info["pretrained_args_embedded"]
    assert info["n"] == summary["splits"]["test"]["kept"]
    scored = fairseq_validate_test(out, best, ["--task", "sentence_prediction", "--criterion", "sentence_prediction",
                                               "--num-classes", str(summary["num_classes"])], work)
    assert scored["bsz"] == info["n"]  # every sentence, none dropped
    assert scored["accuracy"] == pytest.approx(100 * info["correct"] / info["n"], abs=0.05)


def test_finetuning_refuses_data_binarized_with_another_dictionary(text_pipeline_prepared, text_pipeline_trained,
                                                                   tmp_path):
    """Token ids must mean what they meant in pretraining."""
    _, corpus, _ = text_pipeline_prepared
    run_dir, _, _ = text_pipeline_trained
    run_command([BIN / "d2v-text-prep", "--train", corpus / "train.txt", "--valid", corpus / "valid.txt",
                 "--out-dir", tmp_path / "other", "--vocab-size", "300"], cwd=tmp_path)
    run_command([BIN / "d2v-text-classification-prep", "--corpus", corpus, "--data-bin",
                 tmp_path / "other" / "data-bin", "--out-dir", tmp_path / "topic"], cwd=tmp_path)
    topic = (tmp_path / "topic", json.loads((tmp_path / "topic" / "classification_prep.json").read_text()), "")
    with pytest.raises(AssertionError, match="is not the one .* was pretrained with"):
        _finetune(topic, run_dir / "ckpt" / "checkpoint_last.pt", tmp_path / "ckpt", tmp_path)


def test_odd_lines_reach_the_classifier(topic_bin):
    """The valid line with characters outside the BPE model is in the binarized valid split."""
    out, summary, _ = topic_bin
    plain = (out / "plain" / "valid.input0").read_text(encoding="utf-8").splitlines()
    assert len(plain) == summary["splits"]["valid"]["kept"]
    unk_lines = [line.split() for line in plain if "<unk>" in line.split()]
    assert any({"▁mapping", "▁object"} <= set(pieces) for pieces in unk_lines), ODD_LINES[1]
