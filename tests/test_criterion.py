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


def test_criterion_returns_summed_loss_and_masked_count():
    model = tiny_model().train()
    mask = sample_block_mask(6, 49, 0.5, 5, generator=torch.Generator().manual_seed(0))
    sample = {"id": torch.tensor([0, 1]), "net_input": {"source": torch.randn(2, 16000), "precomputed_mask": mask}}
    loss, sample_size, log = Data2VecCriterion(task=None)(model, sample)
    assert sample_size == mask.sum() and log["sample_size"] == mask.sum()
    assert loss.requires_grad and torch.isfinite(loss)
    assert {"target_var", "pred_var", "ema_decay", "masked_pct", "nforwards"} <= set(log)
