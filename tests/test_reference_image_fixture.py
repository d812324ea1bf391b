"""Our ``data2vec_multi`` IMAGE model against outputs recorded with the reference data2vec 2.0 code.

The fixture folder ``upstream_d2v2_image`` (see its README.md) holds a small randomly
initialised IMAGE checkpoint made with the reference implementation (fairseq
``examples/data2vec``), the same weights wrapped as a full fairseq training checkpoint
(``checkpoint_fairseq.pt``, task ``mae_image_pretraining``, user_dir and data paths that do
not exist), and the arrays that implementation computed: feature extraction (``feat_*``),
the pretraining objective with a fixed mask (``obj_*``, ``scalars.json``) and the
state-dict layout. Our model loads those weights and must reproduce the arrays; nothing is
re-recorded from our code.

Tolerance: every float32 array must match with a max absolute difference <= ``ATOL = 1e-4``
(CPU, float32); the summed loss additionally within a relative ``LOSS_RTOL = 1e-5``; the
mask, sample size, masked fraction and key/shape layouts exactly.

Two recorded things are compared up to what the reference leaves undefined:

* the student encoder output (CLS + 12 kept patches per row) is matched token by token up
  to the order of the kept patches: the reference orders them by an unstable
  ``mask.argsort()``, we by position; the CLS token (row index 0) must match in place;
* ``obj_noise`` (decoder mask tokens drawn with ``mask_noise_std`` 0.01) is not compared:
  which Gaussian draw lands on which masked patch depends on that same unstable order and
  on the RNG calls made before the decoder, so only the noise-free objective (``obj``,
  ``mask_noise_std`` 0, as the README records it) is a well-defined reference.

The objective runs as the README says: ``clone_batch = 4`` (the checkpoint's config says 1;
the recorded mask has 2 x 4 rows), ``mask_noise_std = 0``, eval mode,
``torch.manual_seed(1234)`` right before the criterion.

Where the fixture lives: ``tests/fixtures/upstream_d2v2_image`` (part of the repository);
``$D2V_FIXTURES`` (a fixtures root or that folder itself) overrides it. A missing file is a
collection error, never a skip.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from typing import Dict

import numpy as np
import pytest
import torch

from reference_fixture import ReferenceFixture, flat_layout

ATOL = 1e-4        # max |ours - reference| for every float32 array (CPU, float32)
LOSS_RTOL = 1e-5   # relative tolerance of the summed objective (on top of ATOL elementwise)
CLONE_BATCH = 4    # README: the objective was computed with clone_batch=4
NOISE_FREE = 0.0   # README: mask_noise_std set to 0.0 for the objective

FIXTURE_NAME = "upstream_d2v2_image"
KEYS_NOT_IN_REFERENCE = {"_ema_num_updates"}  # our teacher's update count (exact resume)


REF = ReferenceFixture(
    FIXTURE_NAME,
    required=("README.md", "model_cfg.json", "checkpoint.pt", "checkpoint_fairseq.pt", "scalars.json",
              "state_dict_keys.txt", "batch_source.npy", "obj_precomputed_mask.npy"),
    modality="image", label="reference image fixture", atol=ATOL,
)
FIXTURES = REF.dir


def _model_from_model_cfg():
    """Our model built from model_cfg.json the way fairseq merges a checkpoint's model config
    (keys our config does not have are dropped), weights from checkpoint.pt, strictly."""
    import d2v_plugin  # noqa: F401
    from fairseq.dataclass.utils import merge_with_parent
    from omegaconf import OmegaConf

    from d2v_plugin.models.config import Data2Vec2Config
    from d2v_plugin.models.data2vec2 import Data2Vec2Model

    raw = json.loads((FIXTURES / "model_cfg.json").read_text())
    raw.pop("_name", None)
    cfg = merge_with_parent(Data2Vec2Config(), OmegaConf.create(raw), remove_missing=True)
    model = Data2Vec2Model(cfg)
    state = torch.load(FIXTURES / "checkpoint.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"], strict=True)
    return model.eval(), state["model"]


# ---- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded():
    return _model_from_model_cfg()


@pytest.fixture(scope="module")
def features(loaded):
    """extract_features with the context-encoder output and the block outputs hooked."""
    model, _ = loaded
    source = REF.tensor("batch_source")
    encoder = model.modality_encoders["IMAGE"]
    captured: Dict = {"blocks": {}}
    hooks = [encoder.context_encoder.register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("encoder_input", out))]
    hooks += [block.register_forward_hook(lambda _m, _i, out, k=k: captured["blocks"].__setitem__(k, out[0]))
              for k, block in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            captured["local_features"] = encoder.local_features(source)
            captured["with_extra"] = model.extract_features(source, padding_mask=None, mask=False,
                                                            remove_extra_tokens=False)
            captured["result"] = model.extract_features(source, padding_mask=None, mask=False)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


@pytest.fixture(scope="module")
def objective(loaded):
    """The README's objective through our criterion, intermediates captured with hooks and
    instance-level wrappers (no library change)."""
    from fairseq.tasks import FairseqTask

    from d2v_plugin.criterions.data2vec import Data2VecCriterion

    model, _ = loaded
    encoder = model.modality_encoders["IMAGE"]
    captured: Dict = {"teacher_layers": {}}
    hooks = [block.register_forward_hook(
                 lambda _m, _i, out, k=k: captured["teacher_layers"].__setitem__(k, out[1]))
             for k, block in enumerate(model.teacher.model.blocks)]
    hooks.append(encoder.decoder.register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("decoder_out", out)))
    hooks.append(model.register_forward_hook(  # the model's ObjectiveResult
        lambda _m, _i, out: captured.__setitem__("net_output", out)))
    orig_targets, orig_decode = model.teacher_targets, encoder.decode

    def teacher_targets(*args, **kwargs):
        captured["targets"] = orig_targets(*args, **kwargs)
        return captured["targets"]

    def decode(x, mask_info):
        captured["student_encoder_out"], captured["mask_info"] = x, mask_info
        return orig_decode(x, mask_info)

    old = model.cfg.clone_batch, encoder.cfg.mask_noise_std
    model.teacher_targets, encoder.decode = teacher_targets, decode
    model.cfg.clone_batch, encoder.cfg.mask_noise_std = CLONE_BATCH, NOISE_FREE
    try:
        source = REF.tensor("batch_source")
        sample = {"id": torch.arange(source.size(0)),
                  "net_input": {"source": source, "precomputed_mask": REF.tensor("obj_precomputed_mask")}}
        torch.manual_seed(1234)
        with torch.no_grad():
            loss, sample_size, logging_output = Data2VecCriterion(FairseqTask(None))(model, sample)
    finally:
        model.cfg.clone_batch, encoder.cfg.mask_noise_std = old
        for hook in hooks:
            hook.remove()
        del model.teacher_targets, encoder.decode
    captured.update(loss=loss, sample_size=sample_size, logging_output=logging_output)
    return captured


# ---- 1. loading -----------------------------------------------------------------------
def test_reference_image_checkpoint_loads_strictly_with_the_reference_layout(loaded):
    """checkpoint.pt into a model built from model_cfg.json: strict load, every tensor equal,
    and our state dict has exactly the reference's keys, shapes, dtypes and order (the
    teacher under ``_ema``, including its own patch embedding: ema_local_encoder)."""
    model, reference = loaded
    expected = REF.state_dict_layout()
    ours = model.state_dict()
    assert list(flat_layout(ours, skip=KEYS_NOT_IN_REFERENCE).items()) == list(expected["pretraining"].items())
    for key, tensor in reference.items():
        if key == "_ema":
            teacher = model.teacher.state_dict()
            assert sorted(teacher) == sorted(tensor)
            assert all(torch.equal(teacher[k], v) for k, v in tensor.items())
        else:
            assert torch.equal(ours[key], tensor), key


def test_reference_image_positions_are_the_fixed_2d_sincos_table(loaded):
    """The checkpoint's fixed positions are exactly our 2D sin-cos table, and not trained."""
    from d2v_plugin.models.image_encoder import sincos_positions_2d

    model, reference = loaded
    positions = reference["modality_encoders.IMAGE.fixed_positional_encoder.positions"]
    diff = float((sincos_positions_2d(64, 8, 8) - positions[0]).abs().max())
    print(f"[reference image fixture] positions: max abs diff {diff:.3g}")
    assert diff <= ATOL
    param = model.modality_encoders["IMAGE"].fixed_positional_encoder.positions
    assert not param.requires_grad


_LOAD_SCRIPT = textwrap.dedent(r"""
    import json, os, sys
    import numpy as np, torch
    import d2v_plugin
    from d2v_plugin.models.data2vec2 import Data2Vec2Model
    from fairseq import checkpoint_utils

    folder = sys.argv[1]
    path = os.path.join(folder, "checkpoint_fairseq.pt")
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path])  # strict=True
    model = models[0].eval()
    reference = torch.load(path, map_location="cpu", weights_only=True)["model"]
    ours = model.state_dict()
    source = torch.from_numpy(np.load(os.path.join(folder, "batch_source.npy")))
    with torch.no_grad():
        x = model.extract_features(source)["x"].numpy()
    print("RESULT " + json.dumps({
        "is_ours": isinstance(model, Data2Vec2Model),
        "modality": model.modality,
        "task": type(task).__name__,
        "task_name": cfg.task._name,
        "user_dir_exists": os.path.exists(cfg.common.user_dir),
        "data_exists": os.path.exists(cfg.task.data),
        "student_not_equal": [k for k in reference if k != "_ema" and not torch.equal(ours[k], reference[k])],
        "teacher_not_equal": [k for k, v in reference["_ema"].items()
                              if not torch.equal(model.teacher.state_dict()[k], v)],
        "feat_x_max_abs_diff": float(np.abs(x - np.load(os.path.join(folder, "feat_x.npy"))).max()),
    }))
""")


def test_reference_fairseq_image_checkpoint_loads_in_fresh_process_with_same_features(tmp_path):
    """A fresh interpreter (only ``import d2v_plugin``) loads checkpoint_fairseq.pt -- task
    ``mae_image_pretraining``, a user_dir and data folder that do not exist -- with fairseq's
    own loader into our model and task, and reproduces feat_x."""
    proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, str(FIXTURES)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"loading checkpoint_fairseq.pt failed:\n{proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result from the subprocess:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    print(f"[reference image fixture] checkpoint_fairseq.pt feat_x: max abs diff "
          f"{result['feat_x_max_abs_diff']:.3g}")
    assert result["is_ours"] and result["modality"] == "IMAGE"
    assert result["task_name"] == "mae_image_pretraining" and result["task"] == "MAEImagePretrainingTask"
    assert not result["user_dir_exists"] and not result["data_exists"]
    assert result["student_not_equal"] == [] and result["teacher_not_equal"] == []
    assert result["feat_x_max_abs_diff"] <= ATOL


def test_reference_image_remove_pretraining_modules_keeps_features():
    """remove_pretraining_modules drops the teacher and decoder (the reference's fine-tuning
    layout) and the features stay the recorded ones."""
    model, _ = _model_from_model_cfg()
    model.remove_pretraining_modules()
    assert flat_layout(model.state_dict(), skip=KEYS_NOT_IN_REFERENCE) == REF.state_dict_layout()["finetuning"]
    with torch.no_grad():
        REF.assert_matches(model.extract_features(REF.tensor("batch_source"))["x"], "feat_x")


# ---- 2. feature extraction ------------------------------------------------------------
def test_reference_image_local_features_match(features):
    REF.assert_matches(features["local_features"], "feat_local_features")


def test_reference_image_context_encoder_output_matches_block0_input(features):
    REF.assert_matches(features["encoder_input"], "feat_encoder_input")


def test_reference_image_layer_results_are_ffn_outputs_with_cls(features):
    layer_results = features["with_extra"]["layer_results"]
    assert len(layer_results) == 2
    REF.assert_matches(torch.stack(layer_results), "feat_layer_results")


def test_reference_image_block_outputs_match(features):
    assert sorted(features["blocks"]) == [0, 1]
    REF.assert_matches(torch.stack([features["blocks"][k] for k in range(2)]), "feat_block_outputs")


def test_reference_image_features_match(features):
    REF.assert_matches(features["result"]["x"], "feat_x")


def test_reference_image_features_with_cls_token_match(features):
    REF.assert_matches(features["with_extra"]["x"], "feat_x_with_extra_tokens")


# ---- 3. the pretraining objective with the recorded mask ------------------------------
def test_reference_image_objective_uses_the_recorded_mask(objective):
    np.testing.assert_array_equal(objective["mask_info"].mask.numpy(), REF.array("obj_precomputed_mask"))


def test_reference_image_teacher_layer_results_match(objective):
    layers = objective["teacher_layers"]
    assert sorted(layers) == [0, 1]
    extra = 1  # the teacher's CLS token, stripped as in the recording
    REF.assert_matches(torch.stack([layers[k][:, extra:] for k in range(2)]), "obj_teacher_layer_results")


def test_reference_image_targets_match(objective):
    REF.assert_matches(objective["targets"], "obj_targets")


def test_reference_image_student_encoder_output_matches(objective):
    """CLS in place; the 12 kept patches one-to-one up to their order (see module docstring)."""
    ours = objective["student_encoder_out"].detach().numpy().astype(np.float64)
    expected = REF.array("obj_student_encoder_out").astype(np.float64)
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    worst = float(np.abs(ours[:, 0] - expected[:, 0]).max())
    for r in range(ours.shape[0]):
        dist = np.abs(expected[r, 1:, None, :] - ours[r, None, 1:, :]).max(-1)  # (K ref, K ours)
        match = dist.argmin(1)
        assert len(set(match.tolist())) == len(match), f"row {r}: tokens do not match one-to-one"
        worst = max(worst, float(dist[np.arange(len(match)), match].max()))
    print(f"[reference image fixture] obj_student_encoder_out: max abs diff {worst:.3g} "
          f"(CLS in place, patches matched up to order)")
    assert worst <= ATOL


def test_reference_image_decoder_output_matches(objective):
    REF.assert_matches(objective["decoder_out"], "obj_decoder_out")


def test_reference_image_regression_loss_elements_match(objective):
    REF.assert_matches(objective["net_output"].losses["IMAGE_regression"], "obj_loss_elements_IMAGE_regression")


def test_reference_image_cls_loss_elements_match(objective):
    REF.assert_matches(objective["net_output"].losses["cls"], "obj_loss_elements_cls")


def test_reference_image_objective_scalars_match(objective):
    ref = REF.scalars()["obj"]
    loss = float(objective["loss"])
    print(f"[reference image fixture] loss: ours {loss:.6f} reference {ref['criterion_loss_sum']:.6f}")
    assert math.isclose(loss, ref["criterion_loss_sum"], rel_tol=LOSS_RTOL)
    losses = objective["net_output"].losses
    for name, total in ref["losses_sum"].items():
        assert math.isclose(float(losses[name].sum()), total, rel_tol=LOSS_RTOL), name
        assert list(losses[name].shape) == ref["losses_shape"][name]
    assert set(losses) == set(ref["losses_sum"])
    assert float(objective["sample_size"]) == ref["criterion_sample_size"]
    log = objective["logging_output"]
    assert int(log["nsentences"]) == ref["logging_output"]["nsentences"]
    for name in ("target_var", "pred_var"):
        ours, expected = float(log[name]), ref["net_output_scalars"][name]
        print(f"[reference image fixture] {name}: max abs diff {abs(ours - expected):.3g}")
        assert abs(ours - expected) <= ATOL, (name, ours, expected)
    assert float(log["masked_pct"]) == ref["net_output_scalars"]["masked_pct"]
