import pytest
import torch

from d2v_plugin.audio_frames import feature_lengths, parse_conv_spec, receptive_field
from d2v_plugin.masking import mask_info_from_mask, num_block_starts, sample_block_mask, sample_blocks

BASE_SPEC = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"


def test_conv_spec_parses_reference_expression_and_refuses_code():
    spec = parse_conv_spec(BASE_SPEC)
    assert spec[0] == (512, 10, 5) and len(spec) == 7
    assert receptive_field(spec) == 400
    assert int(feature_lengths(16000, spec)) == 49  # 50 frames/s at 16 kHz
    with pytest.raises(ValueError):
        parse_conv_spec("__import__('os').system('true')")


@pytest.mark.parametrize("length", [49, 100, 250])
def test_span_mask_gives_every_row_the_same_count_near_mask_prob(length):
    mask = sample_block_mask(64, length, mask_prob=0.5, mask_length=5, mask_prob_adjust=0.05,
                             generator=torch.Generator().manual_seed(0))
    counts = mask.sum(1)
    assert (counts == counts[0]).all()
    assert abs(counts[0].item() / length - 0.5) <= 1 / length + 1e-9


def test_span_mask_masks_contiguous_spans_not_isolated_frames():
    mask = sample_block_mask(32, 400, 0.5, 5, 0.05, generator=torch.Generator().manual_seed(1))
    starts = (mask[:, 1:] & ~mask[:, :-1]).sum() + mask[:, 0].sum()
    mean_run = mask.sum() / starts
    assert mean_run > 3, f"masked runs average {mean_run:.2f} frames; spans of 5 expected"


def test_inverse_block_masking_keeps_about_L_times_one_minus_R_plus_A_over_B_block_starts():
    L, R, A, B = 196, 0.8, 0.07, 3
    assert num_block_starts(L, R, B, A, inverse=True) == int(L * ((1 - R) + A) / B)
    kept = sample_blocks(1000, L, num_block_starts(L, R, B, A, inverse=True), B,
                         torch.Generator().manual_seed(2))
    # each start becomes a block of B frames; overlaps make the kept fraction a bit smaller
    expected = int(L * ((1 - R) + A) / B) * B
    assert 0.75 * expected < kept.sum(1).float().mean() <= expected
    mask = sample_block_mask(1000, L, R, B, A, inverse=True, generator=torch.Generator().manual_seed(3))
    assert (mask.sum(1) == L - int(L * (1 - R))).all()


def test_masks_are_reproducible_from_a_generator_and_differ_across_seeds():
    a = sample_block_mask(4, 50, 0.5, 5, 0.05, generator=torch.Generator().manual_seed(7))
    b = sample_block_mask(4, 50, 0.5, 5, 0.05, generator=torch.Generator().manual_seed(7))
    c = sample_block_mask(4, 50, 0.5, 5, 0.05, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mask_info_restores_positions_and_refuses_unequal_rows():
    mask = sample_block_mask(6, 30, 0.5, 5, generator=torch.Generator().manual_seed(4))
    info = mask_info_from_mask(mask)
    x = torch.arange(30).float().expand(6, 30)
    kept = x.gather(1, info.ids_keep)
    assert (torch.diff(kept, dim=1) > 0).all()  # kept frames in their original order
    masked = x[mask].view(6, -1)
    restored = torch.cat([kept, masked], 1).gather(1, info.ids_restore)
    assert torch.equal(restored, x)
    bad = mask.clone()
    bad[0] = False
    with pytest.raises(ValueError, match="same number"):
        mask_info_from_mask(bad)
