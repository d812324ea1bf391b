"""Our TEXT ``data2vec_multi`` against outputs recorded with the reference data2vec 2.0 code.

The fixture folder ``upstream_d2v2_text`` (see its README.md) holds a small random-init TEXT
model made with the reference implementation (fairseq ``examples/data2vec``), as a bare
``checkpoint.pt`` and as a full fairseq training checkpoint ``checkpoint_fairseq.pt`` (task:
fairseq's own ``masked_lm`` with ``d2v2_multi``), plus the arrays that implementation computed:
feature extraction (``feat_*``), the pretraining objective with a fixed mask (``obj_*``) and
the state-dict layout. Our model loads the weights and must reproduce those arrays; nothing is
re-recorded from our code.

Tolerance: every float32 array must match with a max absolute difference <= ``ATOL = 1e-4``
(CPU, float32); the summed loss additionally within a relative ``LOSS_RTOL = 1e-5``; boolean
arrays, sample sizes and key/shape layouts exactly. With ``mask_noise_std`` 0.01 (the
configured value) the decoder's Gaussian mask tokens are drawn per position in a different
order than upstream's (see tests/test_reference_audio_fixture.py), so that loss is checked
within ``NOISE_LOSS_ATOL``: the whole effect of the noise on the reference loss is 7e-4.

Where the fixture lives: ``tests/fixtures/upstream_d2v2_text`` (part of the repository);
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

ATOL = 1e-4             # max |ours - reference| for every float32 array (CPU, float32)
LOSS_RTOL = 1e-5        # relative tolerance of the summed objective
NOISE_LOSS_ATOL = 1e-2  # loss with mask_noise_std 0.01 (noise drawn in another order than upstream)
CLONE_BATCH = 4         # the README: the objective was recorded with clone_batch=4

FIXTURE_NAME = "upstream_d2v2_text"
KEYS_NOT_IN_REFERENCE = {"_ema_num_updates"}  # our extra state-dict key (see the audio test)


REF = ReferenceFixture(
    FIXTURE_NAME,
    required=("README.md", "checkpoint.pt", "checkpoint_fairseq.pt", "model_cfg.json", "dict.txt",
              "scalars.json", "state_dict_keys.txt", "batch_source.npy"),
    modality="text", label="reference text fixture", atol=ATOL,
)
FIXTURES = REF.dir


class _DictionaryTask:
    """What the reference fixture gave the model: a task exposing ``source_dictionary``."""

    def __init__(self):
        from fairseq.data import Dictionary

        self.source_dictionary = Dictionary.load(str(FIXTURES / "dict.txt"))


def _build_model(clone_batch: int = CLONE_BATCH):
    """Our model from model_cfg.json (fields our config lacks dropped, as fairseq does when
    loading a checkpoint), with the README's clone_batch, and checkpoint.pt loaded strictly."""
    import d2v_plugin  # noqa: F401
    from fairseq.dataclass.utils import merge_with_parent
    from omegaconf import OmegaConf

    from d2v_plugin.models.config import Data2Vec2Config
    from d2v_plugin.models.data2vec2 import Data2Vec2Model

    raw = json.loads((FIXTURES / "model_cfg.json").read_text())
    raw.pop("_name", None)
    raw["clone_batch"] = clone_batch
    cfg = merge_with_parent(Data2Vec2Config(), OmegaConf.create(raw), remove_missing=True)
    model = Data2Vec2Model(cfg, task=_DictionaryTask())
    state = torch.load(FIXTURES / "checkpoint.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"], strict=True)
    model.eval()
    return model, state


def _batch():
    return REF.tensor("batch_source"), REF.tensor("batch_padding_mask")


# ---- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded():
    return _build_model()


@pytest.fixture(scope="module")
def features(loaded):
    """extract_features on the padded batch, with the encoder input and block outputs hooked."""
    model, _ = loaded
    source, padding_mask = _batch()
    encoder = model.modality_encoders["TEXT"]
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
            captured["with_extra"] = model.extract_features(source, padding_mask=padding_mask, mask=False,
                                                            remove_extra_tokens=False)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def _run_objective(model, mask_noise_std: float) -> Dict:
    """The README's objective (eval, torch.manual_seed(1234), the recorded mask) through our
    ``data2vec`` criterion, capturing intermediates with instance-level wrappers and hooks."""
    from d2v_plugin.criterions.data2vec import Data2VecCriterion

    source, padding_mask = _batch()
    encoder = model.modality_encoders["TEXT"]
    captured: Dict = {"teacher_layers": {}}
    hooks = [block.register_forward_hook(
                 lambda _m, _i, out, k=k: captured["teacher_layers"].__setitem__(k, out[1]))
             for k, block in enumerate(model.teacher.model)]
    hooks.append(encoder.decoder.register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("decoder_out", out)))
    hooks.append(model.register_forward_hook(  # the model's ObjectiveResult
        lambda _m, _i, out: captured.__setitem__("net_output", out)))
    orig_targets, orig_decoder_input = model.teacher_targets, encoder.decoder_input

    def teacher_targets(*args, **kwargs):
        captured["targets"] = orig_targets(*args, **kwargs)
        return captured["targets"]

    def decoder_input(x, mask_info):
        captured["student_encoder_out"], captured["mask_info"] = x, mask_info
        captured["decoder_input"] = orig_decoder_input(x, mask_info)
        return captured["decoder_input"]

    old_std = encoder.modality_cfg.mask_noise_std
    model.teacher_targets, encoder.decoder_input = teacher_targets, decoder_input
    encoder.modality_cfg.mask_noise_std = mask_noise_std
    try:
        sample = {"id": torch.arange(source.size(0)),
                  "net_input": {"source": source, "padding_mask": padding_mask,
                                "precomputed_mask": REF.tensor("obj_precomputed_mask")}}
        torch.manual_seed(1234)
        with torch.no_grad():
            loss, sample_size, logging_output = Data2VecCriterion(None)(model, sample)
    finally:
        encoder.modality_cfg.mask_noise_std = old_std
        for hook in hooks:
            hook.remove()
        del model.teacher_targets, encoder.decoder_input
    captured.update(loss=loss, sample_size=sample_size, logging_output=logging_output)
    return captured


@pytest.fixture(scope="module")
def objective(loaded):
    model, _ = loaded
    return _run_objective(model, 0.0)


# ---- 1. loading -----------------------------------------------------------------------
def test_reference_text_checkpoint_loads_strictly_with_teacher_from_ema(loaded):
    """checkpoint.pt loads strictly into our model built from model_cfg.json; every student
    tensor equals the checkpoint's and the teacher (blocks only) equals its ``_ema``."""
    model, state = loaded
    reference = state["model"]
    ours = model.state_dict()
    for key, tensor in reference.items():
        if key != "_ema":
            assert torch.equal(ours[key], tensor), key
    ema, teacher = reference["_ema"], model.teacher.state_dict()
    assert sorted(teacher) == sorted(ema)
    assert all(k.split(".")[0] in ("0", "1") for k in teacher), "teacher must be the blocks only"
    assert all(torch.equal(teacher[k], ema[k]) for k in ema)


def test_our_text_dictionary_loader_gives_the_reference_indices():
    """d2v_plugin's loader (dict.txt + <mask>, as masked_lm) yields the reference's indices."""
    from d2v_plugin.data.text_dataset import load_text_dictionary

    ours, reference = load_text_dictionary(str(FIXTURES)), _DictionaryTask().source_dictionary
    assert len(ours) == len(reference) == 24
    assert [ours[i] for i in range(len(ours))] == [reference[i] for i in range(len(reference))]
    assert (ours.bos(), ours.pad(), ours.eos(), ours.unk(), ours.index("<mask>")) == (0, 1, 2, 3, 22)


_FAIRSEQ_LOAD_SCRIPT = textwrap.dedent(r"""
    import json, os, sys
    import numpy as np
    import torch
    import d2v_plugin
    from d2v_plugin.models.data2vec2 import Data2Vec2Model
    from fairseq import checkpoint_utils

    folder = sys.argv[1]
    path = os.path.join(folder, "checkpoint_fairseq.pt")
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [path], arg_overrides={"data": folder})  # strict=True
    model = models[0].eval()
    reference = torch.load(path, map_location="cpu", weights_only=True)["model"]
    ours = model.state_dict()
    source = torch.from_numpy(np.load(os.path.join(folder, "batch_source.npy")))
    padding_mask = torch.from_numpy(np.load(os.path.join(folder, "batch_padding_mask.npy")))
    with torch.no_grad():
        x = model.extract_features(source, padding_mask=padding_mask, mask=False)["x"]
    expected = np.load(os.path.join(folder, "feat_x.npy"))
    print("RESULT " + json.dumps({
        "is_ours": isinstance(model, Data2Vec2Model),
        "task": type(task).__name__,
        "dictionary_size": len(task.source_dictionary),
        "mask_index": task.source_dictionary.index("<mask>"),
        "user_dir_exists": os.path.exists(cfg.common.user_dir),
        "student_not_equal": [k for k in reference if k != "_ema" and not torch.equal(ours[k], reference[k])],
        "teacher_not_equal": [k for k, v in reference["_ema"].items()
                              if not torch.equal(model.teacher.state_dict()[k], v)],
        "feat_x_max_abs_diff": float(np.abs(x.numpy().astype(np.float64) - expected).max()),
    }))
""")


def test_reference_fairseq_checkpoint_loads_with_masked_lm_task_in_fresh_process(tmp_path):
    """checkpoint_fairseq.pt (task: fairseq's own masked_lm, user_dir and data that do not
    exist) loads with load_model_ensemble_and_task in a fresh interpreter into our model,
    strictly, and reproduces feat_x within ATOL."""
    proc = subprocess.run([sys.executable, "-c", _FAIRSEQ_LOAD_SCRIPT, str(FIXTURES)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"loading failed:\n{proc.stderr[-4000:]}"
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, f"no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    print(f"[reference text fixture] checkpoint_fairseq.pt feat_x: max abs diff "
          f"{result['feat_x_max_abs_diff']:.3g}")
    assert result["is_ours"] and result["task"] == "MaskedLMTask", result
    assert result["dictionary_size"] == 24 and result["mask_index"] == 22, result
    assert not result["user_dir_exists"]
    assert result["student_not_equal"] == [] and result["teacher_not_equal"] == [], result
    assert result["feat_x_max_abs_diff"] <= ATOL, result


# ---- 2. feature extraction ------------------------------------------------------------
def test_reference_text_local_features_match(features):
    REF.assert_matches(features["local_features"], "feat_local_features")


def test_reference_text_context_encoder_output_matches(features):
    REF.assert_matches(features["encoder_input"], "feat_encoder_input")


def test_reference_text_layer_results_are_ffn_outputs_of_all_blocks(features):
    layer_results = features["result"]["layer_results"]
    assert len(layer_results) == 2
    REF.assert_matches(torch.stack(layer_results), "feat_layer_results")


def test_reference_text_block_outputs_match(features):
    assert sorted(features["blocks"]) == [0, 1]
    REF.assert_matches(torch.stack([features["blocks"][k] for k in range(2)]), "feat_block_outputs")


def test_reference_text_feature_extraction_matches_final_output(features):
    REF.assert_matches(features["result"]["x"], "feat_x")


def test_reference_text_features_with_extra_tokens_match(features):
    REF.assert_matches(features["with_extra"]["x"], "feat_x_with_extra_tokens")


def test_reference_text_padding_mask_matches_exactly(features):
    ours = features["result"]["padding_mask"]
    assert ours is not None and ours.dtype == torch.bool
    np.testing.assert_array_equal(ours.numpy(), REF.array("feat_padding_mask"))


def test_text_padding_mask_defaults_to_pad_tokens(loaded):
    """Without a padding mask the pad tokens are found from the source: same features."""
    model, _ = loaded
    source, _ = _batch()
    with torch.no_grad():
        result = model.extract_features(source, padding_mask=None, mask=False)
    np.testing.assert_array_equal(result["padding_mask"].numpy(), REF.array("feat_padding_mask"))
    REF.assert_matches(result["x"], "feat_x")


# ---- 3. the pretraining objective with the recorded mask ------------------------------
def test_reference_text_objective_teacher_layer_results_match(objective):
    layers = objective["teacher_layers"]
    assert sorted(layers) == [0, 1]
    REF.assert_matches(torch.stack([layers[k] for k in range(2)]), "obj_teacher_layer_results")


def test_reference_text_objective_targets_match(objective):
    REF.assert_matches(objective["targets"], "obj_targets")


def test_reference_text_objective_student_encoder_output_matches(objective):
    """Row by row up to the order of the kept tokens: the reference orders them by an
    unstable argsort of the mask, we by position; the blocks are permutation-equivariant
    (positions are added in the local encoder), so each reference token must match one of
    ours one-to-one within ATOL. Kept *padded* tokens are identical to each other (zero token
    and position rows), so the one-to-one matching is an optimal assignment, not argmin."""
    from scipy.optimize import linear_sum_assignment

    np.testing.assert_array_equal(objective["mask_info"].mask.numpy(), REF.array("obj_precomputed_mask"))
    ours = objective["student_encoder_out"].detach().numpy().astype(np.float64)
    expected = REF.array("obj_student_encoder_out").astype(np.float64)
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    worst = 0.0
    for r in range(ours.shape[0]):
        dist = np.abs(expected[r][:, None, :] - ours[r][None, :, :]).max(-1)  # (K ref, K ours)
        rows, cols = linear_sum_assignment(dist)
        worst = max(worst, float(dist[rows, cols].max()))
    print(f"[reference text fixture] obj_student_encoder_out: max abs diff {worst:.3g} (up to token order)")
    assert worst <= ATOL


def test_reference_text_objective_decoder_output_matches(objective):
    REF.assert_matches(objective["decoder_out"], "obj_decoder_out")


def test_reference_text_objective_loss_elements_match(objective):
    """[40, 64]: 8 rows x 5 masked positions, masked *padded* positions included as upstream."""
    REF.assert_matches(objective["net_output"].losses["TEXT_regression"], "obj_loss_elements_TEXT_regression")


def test_reference_text_objective_criterion_scalars_match(objective):
    ref = REF.scalars()["obj"]
    loss = float(objective["loss"])
    print(f"[reference text fixture] obj loss: ours {loss:.6f} reference {ref['criterion_loss_sum']:.6f}")
    assert math.isclose(loss, ref["criterion_loss_sum"], rel_tol=LOSS_RTOL), (loss, ref["criterion_loss_sum"])
    assert float(objective["sample_size"]) == ref["criterion_sample_size"] == 40
    log = objective["logging_output"]
    assert int(log["nsentences"]) == ref["logging_output"]["nsentences"]
    for name in ("target_var", "pred_var"):
        ours, expected = float(log[name]), ref["net_output_scalars"][name]
        print(f"[reference text fixture] obj {name}: ours {ours:.6g} reference {expected:.6g}")
        assert abs(ours - expected) <= ATOL, (name, ours, expected)
    assert abs(float(log["masked_pct"]) - ref["net_output_scalars"]["masked_pct"]) <= 1e-12
    assert {k: list(v.shape) for k, v in objective["net_output"].losses.items()} == ref["losses_shape"]


def test_reference_text_objective_with_mask_noise_is_close_and_uses_the_noise(loaded, objective):
    model, _ = loaded
    noisy = _run_objective(model, 0.01)
    ref = REF.scalars()["obj_noise"]
    loss = float(noisy["loss"])
    print(f"[reference text fixture] obj_noise loss: ours {loss:.5f} reference {ref['criterion_loss_sum']:.5f}")
    assert abs(loss - ref["criterion_loss_sum"]) < NOISE_LOSS_ATOL
    assert loss != float(objective["loss"]), "mask_noise_std was ignored"
    tokens = noisy["decoder_input"][noisy["mask_info"].mask]
    assert 0.009 < float(tokens.std()) < 0.011


# ---- 4. remove_pretraining_modules and the state-dict layout ---------------------------
def test_text_remove_pretraining_modules_keeps_features():
    model, _ = _build_model()
    source, padding_mask = _batch()
    model.remove_pretraining_modules()
    model.eval()
    assert flat_layout(model.state_dict()) == REF.state_dict_layout()["finetuning"]
    with torch.no_grad():
        x = model.extract_features(source, padding_mask=padding_mask, mask=False)["x"]
    REF.assert_matches(x, "feat_x")


def test_fresh_text_model_state_dict_layout_matches_reference():
    """A freshly built model (no weights loaded) has the reference's keys, shapes, dtypes and
    order, apart from KEYS_NOT_IN_REFERENCE."""
    import d2v_plugin  # noqa: F401
    from fairseq.dataclass.utils import merge_with_parent
    from omegaconf import OmegaConf

    from d2v_plugin.models.config import Data2Vec2Config
    from d2v_plugin.models.data2vec2 import Data2Vec2Model

    raw = json.loads((FIXTURES / "model_cfg.json").read_text())
    raw.pop("_name", None)
    cfg = merge_with_parent(Data2Vec2Config(), OmegaConf.create(raw), remove_missing=True)
    ours = {k: v for k, v in flat_layout(Data2Vec2Model(cfg, task=_DictionaryTask()).state_dict()).items()
            if k not in KEYS_NOT_IN_REFERENCE}
    expected = REF.state_dict_layout()["pretraining"]
    assert list(ours.items()) == list(expected.items())


# ---- 5. fine-tuning a reference checkpoint for sentence classification ----------------------
def test_reference_checkpoint_fine_tunes_as_data2vec_classification(tmp_path):
    """checkpoint_fairseq.pt as ``model.model_path`` of data2vec_classification with fairseq's
    sentence_prediction task (its input0/dict.txt = the fixture's): the encoder is the
    reference student, and the mean-pooled sentence vector is the mean of the recorded
    feat_x over each sentence's non-pad tokens."""
    import shutil

    import d2v_plugin  # noqa: F401
    from fairseq import tasks
    from omegaconf import OmegaConf

    for sub, text in (("input0", None), ("label", "yes 1\nno 1\n")):
        (tmp_path / sub).mkdir()
        if text is None:
            shutil.copy(FIXTURES / "dict.txt", tmp_path / sub / "dict.txt")
        else:
            (tmp_path / sub / "dict.txt").write_text(text)
    task = tasks.setup_task(OmegaConf.create({
        "_name": "sentence_prediction", "data": str(tmp_path), "num_classes": 2, "init_token": 0,
        "separator_token": 2, "max_positions": 64, "d2v2_multi": True, "regression_target": False,
        "classification_head_name": "head", "seed": 1, "no_shuffle": False, "shorten_method": "none",
        "shorten_data_split_list": "", "add_prev_output_tokens": False}))
    model = task.build_model(OmegaConf.create({"_name": "data2vec_classification",
                                               "model_path": str(FIXTURES / "checkpoint_fairseq.pt")}))
    model.eval()
    from fairseq import checkpoint_utils

    reference = checkpoint_utils.load_checkpoint_to_cpu(str(FIXTURES / "checkpoint_fairseq.pt"))["model"]
    student = {k: v for k, v in reference.items() if not k.startswith("_ema") and ".decoder." not in k}
    loaded = {k[len("encoder."):]: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    assert sorted(loaded) == sorted(student) and all(torch.equal(loaded[k], student[k]) for k in student)
    source, padding_mask = _batch()
    with torch.no_grad():
        pooled, _ = model(source=source, padding_mask=padding_mask)
        logits, _ = model(source=source, padding_mask=padding_mask, classification_head_name="head")
    keep = (~REF.tensor("batch_padding_mask")).unsqueeze(-1).float()
    expected = (REF.tensor("feat_x") * keep).sum(1) / keep.sum(1)                 # (2, 64)
    diff = float((pooled - expected).abs().max())
    print(f"[reference text fixture] pooled feat_x: max abs diff {diff:.3g}")
    assert diff <= ATOL
    assert logits.shape == (2, 2)
