"""The tiny image config through the real ``fairseq-hydra-train`` on the embedded digits
corpus: it learns, its checkpoint loads in a fresh process, the linear probe runs on it, and
bad images fail with a message naming the file."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import make_image_corpus as mic
from cli_utils import (HYDRA_TRAIN, REPO, assert_same_rows_after_resume, assert_same_teacher,
                       json_rows, kill_after_first_checkpoint, run_hydra_train, run_python,
                       score_in_fresh_process, fairseq_validate_test)

pytestmark = pytest.mark.slow

UPDATES = 40


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """The digits corpus at 32 px, plus a few images in other modes (RGBA, LA, palette with
    transparency, CMYK, 16-bit grey) in the training split: the real run must convert them."""
    root = tmp_path_factory.mktemp("digits")
    mic.make_corpus(root, size=32, seed=1)
    rng = np.random.default_rng(0)
    base = Image.open(next((root / "train" / "3").glob("*.png"))).convert("RGB")
    odd = {
        "rgba.png": base.convert("RGBA"),
        "la.png": base.convert("LA"),
        "palette.png": base.convert("P"),
        "cmyk.jpg": base.convert("CMYK"),
        "grey16.png": Image.fromarray((rng.random((32, 32)) * 65535).astype(np.uint16)),
        "rgb_big.jpg": base.resize((48, 40)),
    }
    odd["rgba.png"].putalpha(Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)))
    odd["palette.png"].info["transparency"] = 0
    for name, img in odd.items():
        img.save(root / "train" / "3" / f"odd_{name}")
    return root


def overrides(corpus: Path, save_dir: Path, max_update: int = UPDATES):
    return [f"task.data={corpus}", f"checkpoint.save_dir={save_dir}", f"optimization.max_update={max_update}",
            "common.log_format=json", "common.log_interval=1", "checkpoint.save_interval_updates=1000",
            "optimizer.groups.default.lr_scheduler.warmup_updates=10", "dataset.num_workers=1"]


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny_image")
    proc = run_hydra_train("pretraining", "tiny_image", overrides(digits, run_dir / "ckpt"), cwd=run_dir)
    output = proc.stdout + proc.stderr
    return run_dir, json_rows(output), json_rows(output, "valid")


def test_tiny_image_pretraining_loss_falls_and_logs_the_monitors(trained):
    _, rows, valid = trained
    assert [int(r["num_updates"]) for r in rows] == list(range(1, UPDATES + 1))
    losses = [float(r["loss"]) for r in rows]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, f"loss did not fall: first 5 mean {first:.2f}, last 5 mean {last:.2f}"
    for key in ("target_var", "pred_var", "ema_decay", "masked_pct"):
        assert key in rows[-1], key
    # 8 x 8 patches, int(64 * 0.2) = 12 kept: 52 / 64 masked in every row
    assert float(rows[-1]["masked_pct"]) == pytest.approx(52 / 64)
    assert min(float(r["target_var"]) for r in rows) > 0.1
    assert valid and np.isfinite(float(valid[-1]["valid_loss"]))  # the valid split (eval transform) ran


def test_tiny_image_checkpoint_loads_in_fresh_process(trained):
    run_dir, _, _ = trained
    ckpt = run_dir / "ckpt" / "checkpoint_last.pt"
    out = run_python(f"""
import json, torch, d2v_plugin
from fairseq import checkpoint_utils
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([{str(ckpt)!r}])
m = models[0].eval()
state = torch.load({str(ckpt)!r}, weights_only=True)
same = all(torch.equal(p, state["model"]["_ema"][n]) for n, p in m.teacher.model.named_parameters())
with torch.no_grad():
    f = m.extract_features(torch.randn(2, 3, 32, 32), remove_extra_tokens=False)
print(json.dumps({{"cls": type(m).__name__, "task": type(task).__name__, "modality": m.modality,
                   "teacher_same": same, "shape": list(f["x"].shape), "layers": len(f["layer_results"]),
                   "teacher_updates": m.teacher.num_updates}}))
""")
    info = json.loads(out.strip().splitlines()[-1])
    assert info == {"cls": "Data2Vec2Model", "task": "ImagePretrainingTask", "modality": "IMAGE",
                    "teacher_same": True, "shape": [2, 65, 64], "layers": 4, "teacher_updates": UPDATES - 1}


def test_linear_probe_runs_on_the_checkpoint_and_its_random_init(trained, digits, tmp_path):
    """d2v-image-probe (as ``python -m``) on the short run: both rows, sane accuracies.
    (The pretrained-vs-random comparison at a real budget is in the README.)"""
    run_dir, _, _ = trained
    out_json = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, "-m", "d2v_plugin.vision.probe", str(run_dir / "ckpt" / "checkpoint_last.pt"),
                           "--data", str(digits), "--compare-random", "--pool", "mean", "cls",
                           "--C", "0.1", "10", "--json", str(out_json)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| pretrained | mean |" in proc.stdout and "| random init | cls |" in proc.stdout
    results = json.loads(out_json.read_text())
    assert [(r["model"], r["pool"]) for r in results] == [
        ("pretrained", "mean"), ("pretrained", "cls"), ("random init", "mean"), ("random init", "cls")]
    for r in results:
        assert r["feature_dim"] == 64 and r["c"] in (0.1, 10)
        assert 0.5 < r["test_top1"] <= 1.0 and 0.5 < r["valid_top1"] <= 1.0  # chance is 0.1


def test_probe_random_init_is_the_pretraining_start(trained):
    """--random-init rebuilds the architecture with torch.manual_seed(common.seed): exactly
    the weights fairseq-hydra-train started from (its teacher at update 0 equals them)."""
    from d2v_plugin.vision.probe import load_models

    run_dir, _, _ = trained
    model, _ = load_models(str(run_dir / "ckpt" / "checkpoint_last.pt"), random_init=True)
    pretrained, _ = load_models(str(run_dir / "ckpt" / "checkpoint_last.pt"))
    a = model.state_dict()
    b = pretrained.state_dict()
    assert a.keys() == b.keys()
    assert torch.equal(a["modality_encoders.IMAGE.fixed_positional_encoder.positions"],
                       b["modality_encoders.IMAGE.fixed_positional_encoder.positions"])
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], b["blocks.0.attn.qkv.weight"])


def test_truncated_image_stops_training_with_its_name(digits, tmp_path):
    corpus = tmp_path / "bad"
    for split in ("train", "valid"):
        for cls in ("0", "1"):
            shutil.copytree(digits / split / cls, corpus / split / cls)
    good = next((corpus / "train" / "1").glob("*.png"))
    bad = corpus / "train" / "1" / "zz_cut.png"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    cmd = [HYDRA_TRAIN, "--config-dir", str(REPO / "config" / "pretraining"), "--config-name", "tiny_image",
           f"common.user_dir={REPO / 'd2v_plugin'}", *overrides(corpus, tmp_path / "ckpt", 20)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"{bad}: unreadable or truncated image" in output, output[-3000:]


# ---- the task in process (no CLI): transforms per split, conversions, the expander -----
def _task_and_model(corpus: Path, task_name: str = "data2vec_image_pretraining", **task_overrides):
    import yaml
    from fairseq import tasks
    from omegaconf import OmegaConf

    import d2v_plugin  # noqa: F401
    from d2v_plugin.models.config import Data2Vec2Config

    composed = yaml.safe_load((REPO / "config" / "pretraining" / "tiny_image.yaml").read_text())
    task_cfg = {**composed["task"], "_name": task_name, "data": str(corpus), "train_subset": "train",
                "seed": 1, **task_overrides}
    task = tasks.setup_task(OmegaConf.create(task_cfg))
    model_cfg = dict(composed["model"])  # _name: data2vec_multi
    model_cfg["ema_anneal_end_step"] = 600
    model = task.build_model(OmegaConf.merge(OmegaConf.structured(Data2Vec2Config), model_cfg))
    return task, model


def test_task_augments_train_only_converts_every_mode_and_expands_batches(digits):
    from d2v_plugin.data.image_transforms import EvalTransform, PretrainingAugmentation

    task, model = _task_and_model(digits)
    task.load_dataset("train")
    task.load_dataset("valid")
    train, valid = task.datasets["train"], task.datasets["valid"]
    assert isinstance(train.transform, PretrainingAugmentation) and train.transform.hflip_prob == 0.0
    assert isinstance(valid.transform, EvalTransform) and not valid.shuffle
    odd = [i for i, p in enumerate(train.folder.paths) if Path(p).name.startswith("odd_")]
    assert len(odd) == 6
    for i in odd:  # RGBA, LA, palette+transparency, CMYK JPEG, 16-bit grey, larger RGB
        x = train[i]["source"]
        assert x.shape == (3, 32, 32) and torch.isfinite(x).all(), train.folder.paths[i]
    first = valid[0]["source"]
    valid.set_epoch(5)
    assert torch.equal(valid[0]["source"], first)  # evaluation: no randomness
    train.set_epoch(1)
    a = train[odd[0]]["source"]
    train.set_epoch(2)
    assert not torch.equal(train[odd[0]]["source"], a)  # a new crop each epoch
    batch = next(iter(task.get_batch_iterator(train, max_sentences=4, seed=1).next_epoch_itr(shuffle=False)))
    assert batch["net_input"]["source"].shape == (4, 3, 32, 32)
    mask = batch["net_input"]["precomputed_mask"]
    assert mask.shape == (4 * 8, 64) and (mask.sum(1) == 52).all()
    with torch.no_grad():
        out = model(**batch["net_input"])
    assert out.losses["IMAGE_regression"].shape == (4 * 8 * 52, 64)


def test_task_refuses_an_input_size_the_model_does_not_have(digits):
    with pytest.raises(ValueError, match="task.input_size=48 but the model expects"):
        _task_and_model(digits, input_size=48)


def test_reference_task_name_serves_our_task_and_refuses_options_it_cannot_honour(digits):
    task, _ = _task_and_model(digits, "mae_image_pretraining")
    task.load_dataset("valid")
    assert len(task.datasets["valid"]) == 269
    task, _ = _task_and_model(digits, "mae_image_pretraining", beit_transforms=True)
    with pytest.raises(NotImplementedError, match=r"\['beit_transforms'\] are not supported"):
        task.load_dataset("train")


def test_killed_image_run_resumes_with_the_same_losses_and_teacher(trained, digits, tmp_path):
    """SIGKILL after the first checkpoint, re-run the same command: every later logged loss
    equals the uninterrupted run's (crops, flips and masks are functions of (seed, epoch, ids);
    fairseq restores the iterator position), and the final teacher is the same."""
    run_dir, reference_rows, _ = trained
    save_dir = tmp_path / "ckpt"
    args = overrides(digits, save_dir) + ["checkpoint.save_interval_updates=15"]
    resume_at = kill_after_first_checkpoint("tiny_image", args, save_dir, tmp_path)
    assert 15 <= resume_at < UPDATES
    proc = run_hydra_train("pretraining", "tiny_image", args, cwd=tmp_path)
    assert_same_rows_after_resume(json_rows(proc.stdout + proc.stderr), reference_rows, resume_at, UPDATES)
    assert_same_teacher(save_dir / "checkpoint_last.pt", run_dir / "ckpt" / "checkpoint_last.pt")


def test_image_classification_fine_tunes_and_fairseq_validate_scores_every_test_image(trained, digits, tmp_path):
    """data2vec_image_classification + data2vec_classification + fairseq's sentence_prediction
    criterion through fairseq-hydra-train, from a copy of the pretrained checkpoint that is then
    deleted: loss falls, valid accuracy is logged, the fine-tuned checkpoint loads in a fresh
    process, and fairseq-validate scores all test images (269: not a multiple of 8)."""
    run_dir, _, _ = trained
    pretrained = tmp_path / "pretrained.pt"
    shutil.copy(run_dir / "ckpt" / "checkpoint_last.pt", pretrained)
    proc = run_hydra_train("finetuning", "tiny_image_classification", [
        f"task.data={digits}", f"model.model_path={pretrained}", f"checkpoint.save_dir={tmp_path / 'ft'}",
        "optimization.max_update=200", "lr_scheduler.warmup_updates=20", "optimization.lr=[0.003]",
        "common.log_format=json", "common.log_interval=1"], cwd=tmp_path)
    pretrained.unlink()
    rows, valid = json_rows(proc.stdout + proc.stderr), json_rows(proc.stdout + proc.stderr, "valid")
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 200 and np.mean(losses[-10:]) < 0.95 * np.mean(losses[:10])
    assert valid and max(float(v["valid_accuracy"]) for v in valid) > 20  # 10 classes: 10 % by chance
    best = tmp_path / "ft" / "checkpoint_best.pt"
    n_test = sum(1 for p in (digits / "test").rglob("*.png"))
    info = score_in_fresh_process(best)
    assert info["n"] == n_test and info["classes"] == [str(i) for i in range(10)] and info["modality"] == "IMAGE"
    assert info["model"] == "Data2VecClassificationModel" and info["pretrained_args_embedded"]
    scored = fairseq_validate_test(digits, best, ["--task", "data2vec_image_classification",
                                                  "--criterion", "sentence_prediction"], tmp_path)
    assert scored["bsz"] == n_test  # every image, none dropped
    assert scored["accuracy"] == pytest.approx(100 * info["correct"] / n_test, abs=0.05)


def test_image_classification_starts_from_the_pretrained_student(trained, digits):
    from fairseq import tasks
    from omegaconf import OmegaConf

    import d2v_plugin  # noqa: F401

    run_dir, _, _ = trained
    ckpt = run_dir / "ckpt" / "checkpoint_last.pt"
    cfg = OmegaConf.load(REPO / "config" / "finetuning" / "tiny_image_classification.yaml")
    cfg.task.data, cfg.model.model_path = str(digits), str(ckpt)
    OmegaConf.update(cfg, "dataset.train_subset", "train", force_add=True)
    OmegaConf.update(cfg, "common.seed", 1, force_add=True)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    student = {k: v for k, v in torch.load(ckpt, weights_only=True)["model"].items()
               if not k.startswith("_ema") and ".decoder." not in k}
    loaded = {k[len("encoder."):]: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    assert sorted(loaded) == sorted(student) and all(torch.equal(loaded[k], student[k]) for k in student)
    assert model.classification_heads["sentence_classification_head"].out_proj.out_features == 10
