"""The criterion's logs reduce correctly when fairseq sums them across workers/micro-batches."""
import pytest
import torch
from fairseq import metrics

from d2v_plugin.criterions.data2vec import Data2VecCriterion
from d2v_plugin.masking import sample_block_mask
from tiny_model import tiny_model


def test_reduce_metrics_weights_loss_by_sample_size_and_averages_monitors_over_forwards():
    logs = [{"loss": 10.0, "sample_size": 5, "nforwards": 1, "target_var": 0.5, "pred_var": 0.2,
             "ema_decay": 0.999, "masked_pct": 0.5},
            {"loss": 30.0, "sample_size": 15, "nforwards": 1, "target_var": 0.7, "pred_var": 0.4,
             "ema_decay": 0.999, "masked_pct": 0.5}]
    summed = {k: sum(log[k] for log in logs) for k in logs[0]}  # what fairseq's all-reduce gives
    for batch in (logs, [summed]):
        with metrics.aggregate() as agg:
            Data2VecCriterion.reduce_metrics(batch)
        values = agg.get_smoothed_values()
        assert values["loss"] == pytest.approx(2.0)
        assert values["target_var"] == pytest.approx(0.6) and values["pred_var"] == pytest.approx(0.3)
        assert values["ema_decay"] == pytest.approx(0.999)
    assert Data2VecCriterion.logging_outputs_can_be_summed()


def test_target_slowness_is_averaged_over_the_forwards_that_logged_it():
    logs = [{"loss": 1.0, "sample_size": 1, "nforwards": 1, "target_slowness": 0.2, "ntarget_slowness": 1},
            {"loss": 1.0, "sample_size": 1, "nforwards": 1, "target_slowness": 0.6, "ntarget_slowness": 1},
            {"loss": 1.0, "sample_size": 1, "nforwards": 1}]   # e.g. a crop shorter than the lag
    summed = {k: sum(log.get(k, 0) for log in logs) for k in logs[0]}
    for batch in (logs, [summed]):
        with metrics.aggregate() as agg:
            Data2VecCriterion.reduce_metrics(batch)
        assert agg.get_smoothed_values()["target_slowness"] == pytest.approx(0.4)
    with metrics.aggregate() as agg:
        Data2VecCriterion.reduce_metrics(logs[2:])
    assert "target_slowness" not in agg.get_smoothed_values()


def test_criterion_returns_summed_loss_and_masked_count():
    model = tiny_model().train()
    mask = sample_block_mask(6, 49, 0.5, 5, generator=torch.Generator().manual_seed(0))
    sample = {"id": torch.tensor([0, 1]), "net_input": {"source": torch.randn(2, 16000), "precomputed_mask": mask}}
    loss, sample_size, log = Data2VecCriterion(task=None)(model, sample)
    assert sample_size == mask.sum() and log["sample_size"] == mask.sum()
    assert loss.requires_grad and torch.isfinite(loss)
    assert {"target_var", "pred_var", "ema_decay", "masked_pct", "nforwards", "target_slowness"} <= set(log)


def _overflowing_model():
    """Decoder projection scaled so its predictions are ~1e6: finite in fp32, inf in fp16."""
    model = tiny_model().train()
    with torch.no_grad():
        model.modality_encoders["AUDIO"].decoder.proj.weight.mul_(1e6)
    return model


def test_nonfinite_loss_in_fp32_is_a_clear_stop_but_an_fp16_overflow_goes_to_the_loss_scaler():
    mask = sample_block_mask(6, 49, 0.5, 5, generator=torch.Generator().manual_seed(0))
    source = torch.randn(2, 16000)
    sample = {"id": torch.tensor([0, 1]), "net_input": {"source": source, "precomputed_mask": mask}}
    criterion = Data2VecCriterion(task=None)
    loss, _, _ = criterion(_overflowing_model(), sample)
    assert torch.isfinite(loss)  # huge but finite in fp32: no false alarm

    # what fairseq's common.fp16 does: model and batch cast to half
    half = _overflowing_model().half()
    half_sample = {"id": sample["id"], "net_input": {"source": source.half(), "precomputed_mask": mask}}
    loss, _, log = criterion(half, half_sample)
    assert not torch.isfinite(loss)  # handed on: backward gives inf grads, the scaler skips the update
    loss.backward()
    grads = [p.grad for p in half.parameters() if p.grad is not None]
    assert any(not torch.isfinite(g).all() for g in grads)

    # the same non-finite loss without fp16 stops with the reason
    model = _overflowing_model()
    with torch.no_grad():
        model.modality_encoders["AUDIO"].decoder.proj.weight.mul_(1e35)  # inf even in fp32
    with pytest.raises(FloatingPointError, match="training diverged"):
        criterion(model, sample)
