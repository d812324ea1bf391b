"""``modalities.audio.conv_pos_zero_padding``: an utterance's features must not depend on the
batch it is padded in.

The reference convolves its positional encoder over padded frames, so the last ~90 frames of a
shorter utterance see the padding (recorded in the reference fixture: ``feat_x`` row 1 differs
from the same row run alone). A CTC model fine-tuned from a data2vec 2.0 checkpoint measured
51.8 % letter error decoded one utterance at a time and 59.8 % decoded in padded batches
(docs/results.md 3.1). With the option on, padded frames are zeros before every positional
conv, which is what an unpadded utterance's own zero padding gives.
"""
from __future__ import annotations

import torch
from omegaconf import open_dict

from reference_fixture import ReferenceFixture

AUDIO = ReferenceFixture("upstream_d2v2_audio", ("checkpoint.pt", "batch_source.npy", "feat_x.npy"),
                         "audio", "audio padding", 1e-5)
ATOL = 1e-5


def _reference_model(zero_padding: bool):
    import d2v_plugin  # noqa: F401  (registers data2vec_multi)
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(AUDIO.dir / "checkpoint.pt")])
    model = models[0].eval()
    cfg = model.modality_encoders["AUDIO"].cfg
    assert not cfg.conv_pos_zero_padding  # a reference checkpoint keeps the reference behaviour
    with open_dict(cfg):
        cfg.conv_pos_zero_padding = zero_padding
    return model


def _padded_batch_and_short_row_alone(zero_padding: bool):
    """The fixture's padded batch through the reference checkpoint -> (batch features (2, T, D),
    the gap between its shorter row and that row run alone, over the row's own frames)."""
    model = _reference_model(zero_padding)
    source, pad = AUDIO.tensor("batch_source"), AUDIO.tensor("batch_padding_mask")
    with torch.no_grad():
        batched = model.extract_features(source, padding_mask=pad, mask=False, remove_extra_tokens=True)["x"]
        alone = model.extract_features(source[1:, :int((~pad[1]).sum())], padding_mask=None, mask=False,
                                       remove_extra_tokens=True)["x"][0]
    gap = float((batched[1, :alone.size(0)] - alone).abs().max())
    print(f"[zero_padding={zero_padding}] padded row vs alone: {gap:.3g}")
    return batched, gap


def test_reference_behaviour_lets_padding_reach_the_end_of_a_shorter_utterance():
    batched, gap = _padded_batch_and_short_row_alone(zero_padding=False)
    assert (batched - torch.from_numpy(AUDIO.array("feat_x"))).abs().max() <= 1e-4
    assert gap > 0.1


def test_zero_padding_makes_a_padded_row_equal_to_the_row_alone():
    batched, gap = _padded_batch_and_short_row_alone(zero_padding=True)
    assert gap <= ATOL
    # the unpadded row is untouched: still the reference's numbers
    assert (batched[0] - torch.from_numpy(AUDIO.array("feat_x")[0])).abs().max() <= 1e-4
