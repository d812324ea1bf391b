"""Text end to end through the real commands: corpus -> d2v-text-prep -> fairseq-hydra-train
tiny_text -> a checkpoint that loads in a fresh process -> d2v-text-probe (the corpus and the
pretraining run are session fixtures, text_pipeline.py; fine-tuning: test_text_classification_cli.py).
"""
import json
import shutil

import pytest

from cli_utils import (assert_same_rows_after_resume, assert_same_teacher, json_rows,
                       kill_after_first_checkpoint, run_hydra_train, run_python)
from text_pipeline import BIN, UPDATES, run_command
from text_pipeline import pretraining_overrides as _overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(text_pipeline_prepared):
    return text_pipeline_prepared


@pytest.fixture(scope="module")
def trained(text_pipeline_trained):
    return text_pipeline_trained


def test_tiny_text_pretraining_loss_falls_and_logs_the_monitors(trained):
    _, rows, valid = trained
    assert [int(r["num_updates"]) for r in rows] == list(range(1, UPDATES + 1))
    losses = [float(r["loss"]) for r in rows]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, f"loss did not fall: first 5 mean {first:.3f}, last 5 mean {last:.3f}"
    for key in ("target_var", "pred_var", "ema_decay", "masked_pct"):
        assert key in rows[-1]
    assert float(rows[-1]["masked_pct"]) == pytest.approx(int(64 * 0.48) / 64, abs=1e-3)
    assert min(float(r["target_var"]) for r in rows) > 0.1
    assert valid, "no validation row: the valid split (with <unk> and empty lines) was not evaluated"


def test_text_checkpoint_loads_in_fresh_process_even_without_its_data_bin(trained, prepared):
    """load_model_ensemble_and_task in a fresh interpreter: once with the data-bin in place,
    once after it moved (the dictionary comes from the checkpoint's task state)."""
    run_dir, _, _ = trained
    root, _, data_bin = prepared
    ckpt = run_dir / "ckpt" / "checkpoint_last.pt"
    script = f"""
import json, sys, torch, d2v_plugin
from fairseq import checkpoint_utils
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([{str(ckpt)!r}])
m = models[0].eval()
state = torch.load({str(ckpt)!r}, weights_only=True)
teacher = m.teacher.state_dict()
tokens = torch.tensor([[0, 5, 6, 3, 7, 2, 1, 1]])
f = m.extract_features(tokens)
print(json.dumps({{"cls": type(m).__name__, "task": type(task).__name__, "vocab": len(task.source_dictionary),
                   "mask": task.source_dictionary.index("<mask>"),
                   "teacher_same": sorted(teacher) == sorted(state["model"]["_ema"]) and
                                   all(torch.equal(v, state["model"]["_ema"][k]) for k, v in teacher.items()),
                   "teacher_blocks_only": all(k.split(".")[0].isdigit() for k in teacher),
                   "shape": list(f["x"].shape), "pad": f["padding_mask"].tolist(),
                   "updates": state["optimizer_history"][-1]["num_updates"]}}))
"""
    dict_size = len((data_bin / "dict.txt").read_text().splitlines()) + 4 + 1  # specials + <mask>
    infos = [json.loads(run_python(script).strip().splitlines()[-1])]
    moved = root / "moved-data-bin"
    shutil.move(str(data_bin), moved)
    try:
        infos.append(json.loads(run_python(script).strip().splitlines()[-1]))
    finally:
        shutil.move(str(moved), data_bin)
    for info in infos:
        assert info["cls"] == "Data2Vec2Model" and info["task"] == "Data2VecTextPretrainingTask"
        assert info["vocab"] == dict_size and info["mask"] == dict_size - 1
        assert info["teacher_same"] and info["teacher_blocks_only"]
        assert info["shape"] == [1, 8, 64] and info["pad"] == [[False] * 6 + [True] * 2]
        assert info["updates"] == UPDATES


def test_text_probe_command_compares_pretrained_with_random_init(trained, prepared, tmp_path):
    """d2v-text-probe at tiny budget: it runs on sentences with <unk> and skips empty lines;
    the report is complete and the two models give different features (no claim on which
    is better after 60 updates: the README's table is the measured comparison)."""
    run_dir, _, _ = trained
    _, corpus, data_bin = prepared
    out = tmp_path / "probe.json"
    proc = run_command([BIN / "d2v-text-probe", run_dir / "ckpt" / "checkpoint_last.pt", "--data", corpus,
                        "--compare-random", "--seeds", "1", "--C", "0.1", "--json", out], cwd=tmp_path)
    assert "| pretrained |" in proc.stdout and "| random init (seed 1) |" in proc.stdout
    report = json.loads(out.read_text())
    names = [r["model"] for r in report["results"]]
    assert names == ["majority class", "pretrained", "random init (seed 1)"]
    classes = (corpus / "classes.txt").read_text().split()
    assert report["classes"] == classes and report["num_updates"] == UPDATES
    test_labels = (corpus / "test.label").read_text().splitlines()
    test_text = (corpus / "test.txt").read_text().splitlines()
    expected_test = sum(1 for t, l in zip(test_text, test_labels) if l in classes and t.strip())
    assert report["sizes"]["test"] == expected_test  # empty lines skipped, the <unk> line kept
    for r in report["results"]:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["valid_accuracy"] <= 1.0
    assert report["results"][1]["test_accuracy"] > 0.0
    shares = report["position_variance_share"]
    assert set(shares) == {"pretrained", "random init (seed 1)"}
    assert set(shares["pretrained"]) == {"features", "targets"}
    assert all(0.0 <= v <= 1.0 for s in shares.values() for v in s.values())
    assert "explained by position alone" in proc.stdout


def test_killed_text_run_resumes_with_the_same_losses_and_teacher(trained, prepared, tmp_path):
    """SIGKILL after the first checkpoint, re-run the same command: every later logged loss
    equals the uninterrupted run's (blocks, order and masks are functions of (seed, epoch,
    ids)), and the final teacher (the EMA of the blocks) is the same."""
    run_dir, reference_rows, _ = trained
    save_dir = tmp_path / "ckpt"
    args = _overrides(prepared[2], save_dir) + ["checkpoint.save_interval_updates=20"]
    resume_at = kill_after_first_checkpoint("tiny_text", args, save_dir, tmp_path)
    assert 20 <= resume_at < UPDATES
    proc = run_hydra_train("pretraining", "tiny_text", args, cwd=tmp_path)
    assert_same_rows_after_resume(json_rows(proc.stdout + proc.stderr), reference_rows, resume_at, UPDATES)
    assert_same_teacher(save_dir / "checkpoint_last.pt", run_dir / "ckpt" / "checkpoint_last.pt")
