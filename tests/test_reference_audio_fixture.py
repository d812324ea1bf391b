"""Our ``data2vec_multi`` against outputs recorded with the reference data2vec 2.0 code.

The fixture folder ``upstream_d2v2_audio`` (see its README.md) holds a small AUDIO checkpoint
trained with the reference implementation (fairseq ``examples/data2vec``) and the arrays
that implementation computed from it: feature extraction (``feat_*``), the pretraining
objective with fixed masks (``obj*``) and the state-dict layout. Here *our* model loads
that checkpoint and must reproduce those arrays; nothing is re-recorded from our code.

Tolerance: every float32 array must match with a max absolute difference
<= ``ATOL = 1e-4`` (CPU, float32); the objective's summed loss additionally within a
relative ``LOSS_RTOL = 1e-5``; boolean arrays, sample sizes and key/shape layouts exactly.
The one exception is ``obj_noise`` (the decoder's Gaussian mask tokens, ``mask_noise_std``
0.01): the reference README allows it "only with a tolerance", because the reference
assigns the i.i.d. noise tokens to the masked positions in the order of an unstable
``argsort`` of the mask, we in increasing position order -- same distribution, different
draw per position. Its loss is checked within ``NOISE_LOSS_ATOL`` of the reference and must
differ from the noise-free loss.

Where the fixture lives: ``tests/fixtures/upstream_d2v2_audio`` (part of the repository);
``$D2V_FIXTURES`` (a fixtures root or that folder itself) overrides it. A missing file is a
collection error, never a skip.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from typing import Dict, Optional

import numpy as np
import pytest
import torch

from reference_fixture import ReferenceFixture, flat_layout

ATOL = 1e-4            # max |ours - reference| for every float32 array (CPU, float32)
LOSS_RTOL = 1e-5       # relative tolerance of the summed objective (on top of ATOL elementwise)
NOISE_LOSS_ATOL = 0.5  # obj_noise: |loss - reference loss| (different noise draw per position)
NOISE_MIN_EFFECT = 1e-2  # obj_noise: the noise must move the loss at least this much

FIXTURE_NAME = "upstream_d2v2_audio"
# keys our checkpoints carry beyond the reference layout (see the strict-xfail test below)
KEYS_NOT_IN_REFERENCE = {"_ema_num_updates"}


REF = ReferenceFixture(
    FIXTURE_NAME,
    required=("README.md", "checkpoint.pt", "checkpoint_training_state.pt", "scalars.json",
              "state_dict_keys.txt", "batch_source.npy"),
    modality="audio", label="reference fixture", atol=ATOL,
)
FIXTURES = REF.dir


def _load_checkpoint(name: str = "checkpoint.pt"):
    import d2v_plugin  # noqa: F401  (registers data2vec_multi)
    from fairseq import checkpoint_utils

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(FIXTURES / name)])
    model = models[0]
    model.eval()
    return model, cfg, task


def _batch():
    return REF.tensor("batch_source"), REF.tensor("batch_padding_mask")


def _run_objective(model, task, source: torch.Tensor, padding_mask: Optional[torch.Tensor],
                   precomputed_mask: torch.Tensor, mask_noise_std: float) -> Dict:
    """The README's objective procedure through our criterion, capturing the intermediates.

    Captured with instance-level wrappers / hooks on our modules (no library change):
    teacher per-block FFN outputs, teacher targets (before repeat to the clones), the
    student encoder output passed to the decoder, the decoder output and the per-element
    losses.
    """
    from d2v_plugin.criterions.data2vec import Data2VecCriterion

    encoder = model.modality_encoders["AUDIO"]
    captured: Dict = {"teacher_layers": {}}
    hooks = [block.register_forward_hook(
                 lambda _m, _i, out, k=k: captured["teacher_layers"].__setitem__(k, out[1]))
             for k, block in enumerate(model.teacher.model.blocks)]
    hooks.append(encoder.decoder.register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("decoder_out", out)))
    hooks.append(model.register_forward_hook(  # the model's ObjectiveResult
        lambda _m, _i, out: captured.__setitem__("net_output", out)))
    orig_targets, orig_decoder_input = model.teacher_targets, encoder.decoder_input

    def teacher_targets(*args, **kwargs):
        captured["targets"] = orig_targets(*args, **kwargs)
        return captured["targets"]

    def decoder_input(x, mask_info):
        captured["student_encoder_out"] = x
        captured["mask_info"] = mask_info
        captured["decoder_input"] = orig_decoder_input(x, mask_info)
        return captured["decoder_input"]

    old_std = encoder.modality_cfg.mask_noise_std
    model.teacher_targets, encoder.decoder_input = teacher_targets, decoder_input
    encoder.modality_cfg.mask_noise_std = mask_noise_std
    try:
        sample = {"id": torch.arange(source.size(0)),
                  "net_input": {"source": source, "padding_mask": padding_mask,
                                "precomputed_mask": precomputed_mask}}
        torch.manual_seed(1234)
        with torch.no_grad():
            loss, sample_size, logging_output = Data2VecCriterion(task)(model, sample)
    finally:
        encoder.modality_cfg.mask_noise_std = old_std
        for hook in hooks:
            hook.remove()
        del model.teacher_targets, encoder.decoder_input
    captured.update(loss=loss, sample_size=sample_size, logging_output=logging_output)
    return captured


# ---- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded():
    model, cfg, task = _load_checkpoint()
    return model, cfg, task


@pytest.fixture(scope="module")
def features(loaded):
    """extract_features on the padded batch, with the encoder input and block outputs hooked."""
    model, _, _ = loaded
    source, padding_mask = _batch()
    encoder = model.modality_encoders["AUDIO"]
    captured: Dict = {"blocks": {}}
    hooks = [encoder.context_encoder.register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("encoder_input", out))]
    hooks += [block.register_forward_hook(
                  lambda _m, _i, out, k=k: captured["blocks"].__setitem__(k, out[0]))
              for k, block in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            captured["local_features"] = encoder.local_features(source)
            captured["result"] = model.extract_features(source, padding_mask=padding_mask, mask=False)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


@pytest.fixture(scope="module")
def objective(loaded):
    model, _, task = loaded
    source, padding_mask = _batch()
    return _run_objective(model, task, source, padding_mask, REF.tensor("obj_precomputed_mask"), 0.0)


@pytest.fixture(scope="module")
def objective_no_padding(loaded):
    model, _, task = loaded
    return _run_objective(model, task, REF.tensor("objnp_source"), None, REF.tensor("objnp_precomputed_mask"), 0.0)


# ---- 1. loading -----------------------------------------------------------------------
_LOAD_SCRIPT = textwrap.dedent(r"""
    import json, os, sys
    import torch
    import d2v_plugin
    from d2v_plugin.models.data2vec2 import Data2Vec2Model
    from fairseq import checkpoint_utils

    path = sys.argv[1]
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path])  # strict=True
    model = models[0]
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = state["model"]
    incompatible = model.load_state_dict(dict(reference), strict=False)  # what strict checks
    ours = model.state_dict()
    student_keys = [k for k in reference if k != "_ema"]
    ema = reference["_ema"]
    teacher = model.teacher.state_dict() if model.teacher is not None else {}
    print("RESULT " + json.dumps({
        "class": type(model).__module__ + "." + type(model).__qualname__,
        "is_ours": isinstance(model, Data2Vec2Model),
        "task": type(task).__name__,
        "user_dir": cfg.common.user_dir,
        "user_dir_exists": bool(cfg.common.user_dir) and os.path.exists(cfg.common.user_dir),
        "data_exists": os.path.exists(cfg.task.data),
        "missing": list(incompatible.missing_keys),
        "unexpected": list(incompatible.unexpected_keys),
        "student_not_equal": [k for k in student_keys if not torch.equal(ours[k], reference[k])],
        "teacher_keys_only_ours": sorted(set(teacher) - set(ema)),
        "teacher_keys_only_ckpt": sorted(set(ema) - set(teacher)),
        "teacher_not_equal": sorted(k for k in set(ema) & set(teacher)
                                    if not torch.equal(teacher[k].float(), ema[k].float())),
        "teacher_has_decoder": any(k.startswith("modality_encoders.AUDIO.decoder") for k in teacher),
    }))
""")


@pytest.mark.parametrize("checkpoint", ["checkpoint.pt", "checkpoint_training_state.pt"])
def test_reference_checkpoint_loads_strictly_in_fresh_process_with_teacher_from_ema(checkpoint, tmp_path):
    """A fresh interpreter (only ``import d2v_plugin``) loads the reference checkpoint --
    also the one whose recorded user_dir / data paths do not exist -- into our class,
    strictly, with every student tensor and the teacher equal to the checkpoint's ``_ema``."""
    proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, str(FIXTURES / checkpoint)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"loading {checkpoint} failed:\n{proc.stderr[-4000:]}"
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, f"no result from the subprocess:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["class"] == "d2v_plugin.models.data2vec2.Data2Vec2Model" and result["is_ours"]
    assert result["task"] == "AudioPretrainingTask"
    if checkpoint == "checkpoint_training_state.pt":
        assert not result["user_dir_exists"] and not result["data_exists"], result
    assert result["missing"] == [] and result["unexpected"] == [], result
    assert result["student_not_equal"] == [], result
    assert result["teacher_keys_only_ours"] == [] and result["teacher_keys_only_ckpt"] == [], result
    assert result["teacher_not_equal"] == [], result
    assert not result["teacher_has_decoder"]


# ---- 2. feature extraction ------------------------------------------------------------
def test_reference_checkpoint_local_features_match(features):
    REF.assert_matches(features["local_features"], "feat_local_features")


def test_reference_checkpoint_context_encoder_output_matches_block0_input(features):
    REF.assert_matches(features["encoder_input"], "feat_encoder_input")


def test_reference_checkpoint_layer_results_are_ffn_outputs_of_all_blocks(features):
    layer_results = features["result"]["layer_results"]
    assert len(layer_results) == 4
    REF.assert_matches(torch.stack(layer_results), "feat_layer_results")


def test_reference_checkpoint_block_outputs_match(features):
    assert sorted(features["blocks"]) == [0, 1, 2, 3]
    REF.assert_matches(torch.stack([features["blocks"][k] for k in range(4)]), "feat_block_outputs")


def test_reference_checkpoint_feature_extraction_matches_final_output(features):
    REF.assert_matches(features["result"]["x"], "feat_x")


def test_reference_checkpoint_frame_padding_mask_matches_exactly(features):
    ours = features["result"]["padding_mask"]
    expected = REF.array("feat_padding_mask")
    assert ours is not None and ours.dtype == torch.bool
    np.testing.assert_array_equal(ours.numpy(), expected)


def test_reference_checkpoint_unpadded_single_row_features_match(loaded):
    model, _, _ = loaded
    source, _ = _batch()
    with torch.no_grad():
        x = model.extract_features(source[:1], padding_mask=None, mask=False)["x"]
    REF.assert_matches(x, "feat_nopad0_x")


# ---- 3./4. the pretraining objective with fixed masks ---------------------------------
def _check_scalars(captured: Dict, key: str) -> None:
    ref = REF.scalars()[key]
    loss = float(captured["loss"])
    ref_loss = ref["criterion_loss_sum"]
    print(f"[reference fixture] {key} loss: ours {loss:.6f} reference {ref_loss:.6f} "
          f"(diff {abs(loss - ref_loss):.3g})")
    assert math.isclose(loss, ref_loss, rel_tol=LOSS_RTOL), (loss, ref_loss)
    assert float(captured["sample_size"]) == ref["criterion_sample_size"]
    log = captured["logging_output"]
    assert float(log["sample_size"]) == ref["logging_output"]["sample_size"]
    assert int(log["nsentences"]) == ref["logging_output"]["nsentences"]
    for name in ("target_var", "pred_var"):
        ours, expected = float(log[name]), ref["net_output_scalars"][name]
        print(f"[reference fixture] {key} {name}: max abs diff {abs(ours - expected):.3g}")
        assert abs(ours - expected) <= ATOL, (name, ours, expected)
    assert abs(float(log["masked_pct"]) - ref["net_output_scalars"]["masked_pct"]) <= 1e-12
    losses = captured["net_output"].losses
    assert set(losses) == set(ref["losses_shape"])
    for name, shape in ref["losses_shape"].items():
        assert list(losses[name].shape) == shape


def _check_student_encoder_out(captured: Dict, name: str) -> float:
    """Compare the kept-token encoder output row by row, up to the order of the kept tokens.

    The reference orders a row's kept tokens by ``mask.argsort()`` (not stable), we by
    position; the encoder is permutation-equivariant (ALiBi uses the tokens' positions),
    so the same tokens appear in a different order. Each reference token is matched to
    our nearest token, the match must be one-to-one, and the max abs diff <= ATOL.
    """
    ours = captured["student_encoder_out"].detach().numpy().astype(np.float64)
    expected = REF.array(name).astype(np.float64)
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    worst = 0.0
    for r in range(ours.shape[0]):
        dist = np.abs(expected[r][:, None, :] - ours[r][None, :, :]).max(-1)  # (K ref, K ours)
        match = dist.argmin(1)
        assert len(set(match.tolist())) == len(match), f"row {r}: tokens do not match one-to-one"
        worst = max(worst, float(dist[np.arange(len(match)), match].max()))
    print(f"[reference fixture] {name}: max abs diff {worst:.3g} (matched up to token order)")
    assert worst <= ATOL, f"{name}: max abs diff {worst:.3g} > {ATOL:g}"
    return worst


def test_reference_objective_teacher_layer_results_match(objective):
    layers = objective["teacher_layers"]
    assert sorted(layers) == [0, 1, 2, 3]
    REF.assert_matches(torch.stack([layers[k] for k in range(4)]), "obj_teacher_layer_results")


def test_reference_objective_teacher_targets_match(objective):
    REF.assert_matches(objective["targets"], "obj_targets")


def test_reference_objective_student_encoder_output_matches(objective):
    np.testing.assert_array_equal(objective["mask_info"].mask.numpy(), REF.array("obj_precomputed_mask"))
    _check_student_encoder_out(objective, "obj_student_encoder_out")


def test_reference_objective_decoder_output_matches(objective):
    REF.assert_matches(objective["decoder_out"], "obj_decoder_out")


def test_reference_objective_loss_elements_match(objective):
    REF.assert_matches(objective["net_output"].losses["AUDIO_regression"], "obj_loss_elements")


def test_reference_objective_criterion_scalars_match(objective):
    _check_scalars(objective, "obj")


def test_reference_objective_without_padding_targets_match(objective_no_padding):
    REF.assert_matches(objective_no_padding["targets"], "objnp_targets")


def test_reference_objective_without_padding_decoder_output_matches(objective_no_padding):
    REF.assert_matches(objective_no_padding["decoder_out"], "objnp_decoder_out")


def test_reference_objective_without_padding_loss_elements_match(objective_no_padding):
    REF.assert_matches(objective_no_padding["net_output"].losses["AUDIO_regression"],
                   "objnp_loss_elements")


def test_reference_objective_without_padding_criterion_scalars_match(objective_no_padding):
    _check_scalars(objective_no_padding, "objnp")


# ---- 5. decoder mask-token noise ------------------------------------------------------
def test_reference_objective_with_mask_noise_is_close_and_uses_the_noise(loaded, objective):
    """mask_noise_std=0.01 (the configured value), seed 1234: loss within NOISE_LOSS_ATOL of
    the reference (noise tokens land on other positions than upstream's, see module doc),
    different from the noise-free loss, and the masked decoder inputs are N(0, 0.01) noise."""
    model, _, task = loaded
    source, padding_mask = _batch()
    noisy = _run_objective(model, task, source, padding_mask, REF.tensor("obj_precomputed_mask"), 0.01)
    ref = REF.scalars()["obj_noise"]
    loss = float(noisy["loss"])
    print(f"[reference fixture] obj_noise loss: ours {loss:.5f} reference "
          f"{ref['criterion_loss_sum']:.5f} (diff {abs(loss - ref['criterion_loss_sum']):.3g})")
    assert abs(loss - ref["criterion_loss_sum"]) < NOISE_LOSS_ATOL
    assert abs(loss - float(objective["loss"])) > NOISE_MIN_EFFECT, "mask_noise_std was ignored"
    assert float(noisy["sample_size"]) == ref["criterion_sample_size"]
    assert abs(float(noisy["logging_output"]["target_var"]) - ref["net_output_scalars"]["target_var"]) <= ATOL
    mask = noisy["mask_info"].mask
    tokens = noisy["decoder_input"][mask]  # (masked positions, D)
    assert 0.009 < float(tokens.std()) < 0.011 and abs(float(tokens.mean())) < 1e-3
    # and with std 0 the masked decoder inputs are exactly zero
    assert float(objective["decoder_input"][objective["mask_info"].mask].abs().max()) == 0.0


# ---- 6. remove_pretraining_modules ----------------------------------------------------
def test_remove_pretraining_modules_drops_teacher_and_decoder_and_keeps_features():
    model, _, _ = _load_checkpoint()
    source, padding_mask = _batch()
    with torch.no_grad():
        before = model.extract_features(source, padding_mask=padding_mask, mask=False)["x"]
    model.remove_pretraining_modules()
    model.eval()
    expected = REF.state_dict_layout()["finetuning"]
    assert flat_layout(model.state_dict()) == expected
    assert not any(k.startswith("_ema") or ".decoder." in k for k in model.state_dict())
    with torch.no_grad():
        after = model.extract_features(source, padding_mask=padding_mask, mask=False)["x"]
    assert float((after - before).abs().max()) == 0.0
    REF.assert_matches(after, "feat_x")


# ---- 7. state-dict layout -------------------------------------------------------------
def _fresh_layout(loaded) -> Dict[str, tuple]:
    _, cfg, task = loaded
    model = task.build_model(cfg.model)  # fresh weights, the checkpoint's configuration
    from d2v_plugin.models.data2vec2 import Data2Vec2Model
    assert isinstance(model, Data2Vec2Model)
    return flat_layout(model.state_dict())


def test_fresh_model_state_dict_layout_matches_reference(loaded):
    """Keys, shapes and dtypes of a freshly built model equal the reference's (``_ema``
    flattened), apart from the extra key(s) in KEYS_NOT_IN_REFERENCE."""
    ours = _fresh_layout(loaded)
    expected = REF.state_dict_layout()["pretraining"]
    ours_cmp = {k: v for k, v in ours.items() if k not in KEYS_NOT_IN_REFERENCE}
    only_ours = sorted(set(ours_cmp) - set(expected))
    only_ref = sorted(set(expected) - set(ours_cmp))
    assert not only_ours and not only_ref, f"only ours: {only_ours}; only reference: {only_ref}"
    wrong = {k: (ours_cmp[k], expected[k]) for k in expected if ours_cmp[k] != expected[k]}
    assert not wrong, f"shape/dtype differs (ours, reference): {wrong}"
    assert list(ours_cmp) == list(expected)  # same order as the reference, too


@pytest.mark.xfail(strict=True, reason=(
    "our state_dict() adds '_ema_num_updates' (data2vec2.py Data2Vec2Model.state_dict), a key the "
    "reference layout lacks; the reference's strict load_state_dict of our checkpoints would "
    "report it as unexpected"))
def test_fresh_model_state_dict_has_exactly_the_reference_keys(loaded):
    assert set(_fresh_layout(loaded)) == set(REF.state_dict_layout()["pretraining"])
