"""Units of the image modality: 2D inverse block masking, the 2D conv decoder, the image
encoder inside the shared model (tiny sizes, no training)."""
import pickle

import pytest
import torch
from omegaconf import OmegaConf

from d2v_plugin.data.pretraining_dataset import seeded_generator
from d2v_plugin.masking import (BlockMaskSampler, BlockMaskSampler2d, grid_shape, mask_info_from_mask,
                                sample_block_mask_2d, sample_blocks_2d)
from d2v_plugin.models.config import Data2Vec2Config, DecoderConfig
from d2v_plugin.models.data2vec2 import Data2Vec2Model
from d2v_plugin.models.decoder import Decoder2d
from d2v_plugin.models.image_encoder import ImageEncoder, sincos_positions_2d


# ---- 2D masking ------------------------------------------------------------------------
def _squares(chosen: torch.Tensor, height: int, width: int, block: int):
    """The (clipped) block x block squares whose union is ``chosen`` (H, W): every chosen
    cell must lie in a square fully inside ``chosen``."""
    grid = chosen.view(height, width)
    covered = torch.zeros_like(grid)
    off = block // 2
    for r in range(height):
        for c in range(width):
            r0, r1 = max(r - off, 0), min(r - off + block, height)
            c0, c1 = max(c - off, 0), min(c - off + block, width)
            if bool(grid[r0:r1, c0:c1].all()):
                covered[r0:r1, c0:c1] = True
    return covered


def test_blocks_2d_are_unions_of_contiguous_squares():
    gen = torch.Generator().manual_seed(0)
    chosen = sample_blocks_2d(200, 14, 14, num_starts=5, block_size=3, generator=gen)
    assert chosen.shape == (200, 196) and chosen.dtype == torch.bool
    for row in chosen:
        assert torch.equal(_squares(row, 14, 14, 3), row.view(14, 14))
    # one start: exactly one square, 9 cells, or fewer where clipped at the border
    one = sample_blocks_2d(500, 8, 8, num_starts=1, block_size=3, generator=gen)
    counts = one.sum(1)
    assert set(counts.tolist()) <= {4, 6, 9} and (counts == 9).float().mean() > 0.3
    for row in one[:50]:
        rows, cols = row.view(8, 8).nonzero(as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert h * w == int(row.sum()) and h <= 3 and w <= 3  # one filled rectangle


def test_block_2d_centres_are_distinct_and_squares_are_row_major():
    chosen = sample_blocks_2d(1, 4, 6, num_starts=24, block_size=1)
    assert bool(chosen.all())  # 24 distinct starts on a 4x6 grid cover it
    gen = torch.Generator().manual_seed(3)
    row = sample_blocks_2d(1, 5, 7, num_starts=1, block_size=3, generator=gen)[0].view(5, 7)
    r, c = row.nonzero(as_tuple=True)
    assert int(r.max() - r.min()) <= 2 and int(c.max() - c.min()) <= 2


@pytest.mark.parametrize("side,mask_prob,block", [(14, 0.8, 3), (8, 0.8, 3), (8, 0.6, 2), (16, 0.5, 4)])
def test_inverse_2d_mask_has_equal_counts_and_the_requested_fraction(side, mask_prob, block):
    L = side * side
    mask = sample_block_mask_2d(64, side, side, mask_prob, block, 0.07, inverse=True,
                                generator=torch.Generator().manual_seed(1))
    assert mask.shape == (64, L) and mask.dtype == torch.bool
    kept = (~mask).sum(1)
    assert (kept == kept[0]).all(), "every row must keep the same count"
    assert int(kept[0]) == int(L * (1 - mask_prob))
    assert abs(float(mask.float().mean()) - mask_prob) <= 1.0 / side  # int() rounding only
    mask_info_from_mask(mask)  # accepted by the model


def test_inverse_2d_mask_keeps_mostly_whole_squares():
    """Inverse masking keeps blocks: with 14x14 and 5 starts of 3x3 (about the target of 39
    kept), most kept patches have a kept 4-neighbour, unlike a uniform random mask."""
    gen = torch.Generator().manual_seed(2)
    mask = sample_block_mask_2d(200, 14, 14, 0.8, 3, 0.07, inverse=True, generator=gen)
    random = torch.rand(200, 196, generator=gen).argsort(1) < 157  # same count, no structure

    def neighbour_fraction(m):
        keep = (~m).view(-1, 14, 14).float()
        n = torch.zeros_like(keep)
        n[:, 1:] += keep[:, :-1]
        n[:, :-1] += keep[:, 1:]
        n[:, :, 1:] += keep[:, :, :-1]
        n[:, :, :-1] += keep[:, :, 1:]
        return float(((n > 0).float() * keep).sum() / keep.sum())

    assert neighbour_fraction(mask) > 0.8 and neighbour_fraction(random) < 0.7


def test_non_inverse_2d_mask_masks_the_requested_fraction():
    mask = sample_block_mask_2d(32, 8, 8, 0.5, 2, 0.0, inverse=False, generator=torch.Generator().manual_seed(0))
    assert (mask.sum(1) == 32).all()


def test_2d_mask_is_reproducible_from_its_generator_and_differs_across_seeds():
    sampler = BlockMaskSampler2d(0.8, 3, 0.07, True)
    a = sampler(16, 196, seeded_generator(1, 1, 5, 6))
    b = sampler(16, 196, seeded_generator(1, 1, 5, 6))
    c = sampler(16, 196, seeded_generator(1, 2, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(pickle.loads(pickle.dumps(sampler))(16, 196, seeded_generator(1, 1, 5, 6)), a)


def test_2d_sampler_refuses_a_non_square_grid():
    assert grid_shape(64) == (8, 8)
    with pytest.raises(ValueError, match="square patch grid"):
        BlockMaskSampler2d(0.8, 3)(2, 60)


# ---- Decoder2d -------------------------------------------------------------------------
def _decoder(dim=32, layers=2, residual=True, kernel=3, decoder_dim=16, groups=4):
    cfg = DecoderConfig(decoder_dim=decoder_dim, decoder_groups=groups, decoder_kernel=kernel,
                        decoder_layers=layers, input_dropout=0.0, decoder_residual=residual)
    return Decoder2d(cfg, dim, 4, 5)


@pytest.mark.parametrize("kernel", [3, 4])
def test_decoder2d_maps_tokens_to_tokens_on_the_grid(kernel):
    dec = _decoder(kernel=kernel)
    x = torch.randn(3, 20, 32)
    assert dec(x).shape == (3, 20, 32)
    names = [n for n, _ in dec.named_parameters()]
    assert names == ["blocks.0.0.weight", "blocks.0.0.bias", "blocks.1.0.weight", "blocks.1.0.bias",
                     "proj.weight", "proj.bias"]
    assert dec.blocks[0][0].weight.shape == (16, 32 // 4, kernel, kernel)
    with pytest.raises(ValueError, match="4x5=20 patches"):
        dec(torch.randn(1, 16, 32))


def test_decoder2d_is_local_on_the_patch_grid():
    """Changing one patch changes the output only within the decoders' receptive field
    (2 layers of 3x3: a 5x5 neighbourhood in row-major (4, 5) grid coordinates)."""
    dec = _decoder().eval()
    x = torch.randn(1, 20, 32)
    y = x.clone()
    y[0, 0] += 1.0  # patch (row 0, col 0)
    changed = (dec(x) - dec(y)).abs().amax(-1)[0].view(4, 5) > 1e-6
    assert bool(changed[0, 0]) and not bool(changed[3:, :].any()) and not bool(changed[:, 3:].any())


def test_decoder2d_residual_adds_each_equal_width_layer_input():
    """With residual, layer 2's output is its conv path plus its input; without, only the path."""
    torch.manual_seed(0)
    dec = _decoder(residual=True)
    plain = _decoder(residual=False)
    plain.load_state_dict(dec.state_dict())
    x = torch.randn(2, 20, 32)
    grid = x.transpose(1, 2).reshape(2, 32, 4, 5)
    h1 = dec.blocks[0](grid)  # 32 -> 16 channels: no residual (widths differ)
    expected = dec.proj((h1 + dec.blocks[1](h1)).flatten(2).transpose(1, 2))
    torch.testing.assert_close(dec(x), expected)
    expected_plain = plain.proj(plain.blocks[1](h1).flatten(2).transpose(1, 2))
    torch.testing.assert_close(plain(x), expected_plain)
    assert not torch.allclose(dec(x), plain(x))


def test_decoder2d_layer_norm_normalises_channels_at_every_position():
    dec = _decoder()
    h = dec.blocks[0][:3](torch.randn(2, 32, 4, 5) * 5 + 3)  # conv, same-pad, layer norm
    torch.testing.assert_close(h.mean(1), torch.zeros(2, 4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(h.var(1, unbiased=False), torch.ones(2, 4, 5), atol=1e-3, rtol=0)


# ---- the encoder in the shared model ---------------------------------------------------
def tiny_image_cfg(**overrides):
    cfg = OmegaConf.structured(Data2Vec2Config)
    cfg.depth, cfg.embed_dim, cfg.num_heads = 2, 32, 4
    cfg.clone_batch, cfg.average_top_k_layers = 3, 2
    cfg.encoder_dropout = cfg.attention_dropout = cfg.post_mlp_drop = cfg.layerdrop = 0.0
    cfg.supported_modality, cfg.cls_loss, cfg.layer_norm_targets = "IMAGE", 0.01, True
    image = cfg.modalities.image
    image.input_size, image.patch_size, image.embed_dim, image.prenet_depth = 16, 4, 32, 1
    image.decoder.decoder_dim, image.decoder.decoder_groups, image.decoder.decoder_layers = 16, 4, 2
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def test_sincos_positions_encode_column_then_row():
    pos = sincos_positions_2d(16, 3, 5)  # (15, 16)
    assert pos.shape == (15, 16)
    # channels 0..7 depend on the column only, 8..15 on the row only (row-major grid)
    grid = pos.view(3, 5, 16)
    assert torch.allclose(grid[0, :, :8], grid[2, :, :8]) and torch.allclose(grid[:, 0, 8:], grid[:, 4, 8:])
    assert torch.equal(pos[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))


def test_image_model_trains_one_step_with_the_2d_masks_and_a_cls_loss():
    torch.manual_seed(0)
    model = Data2Vec2Model(tiny_image_cfg())
    encoder = model.modality_encoders["IMAGE"]
    assert isinstance(encoder, ImageEncoder) and encoder.num_patches == 16
    sampler = ImageEncoder.mask_sampler(encoder.cfg)
    assert isinstance(sampler, BlockMaskSampler2d)
    source = torch.randn(2, 3, 16, 16)
    mask = sampler(6, 16, torch.Generator().manual_seed(0))
    out = model(source, precomputed_mask=mask)
    assert set(out.losses) == {"IMAGE_regression", "cls"}
    assert out.losses["IMAGE_regression"].shape == (int(mask.sum()), 32)
    assert out.losses["cls"].shape == (6, 32)
    sum(v.sum() for v in out.losses.values()).backward()
    assert encoder.local_encoder.proj.weight.grad is not None
    assert encoder.fixed_positional_encoder.positions.grad is None  # fixed, not trained
    assert not any(n.endswith("positions") for n, p in model.named_parameters() if p.requires_grad)
    # the teacher has its own patch embedding (ema_local_encoder) and no decoder
    teacher_keys = model.teacher.state_dict().keys()
    assert "modality_encoders.IMAGE.local_encoder.proj.weight" in teacher_keys
    assert not any(".decoder." in k for k in teacher_keys)


def test_image_model_rejects_wrong_sizes_and_unsupported_options():
    model = Data2Vec2Model(tiny_image_cfg())
    with pytest.raises(ValueError, match=r"expected images \(B, C, 16, 16\)"):
        model.extract_features(torch.randn(1, 3, 32, 32))
    with pytest.raises(NotImplementedError, match="transformer_decoder"):
        Data2Vec2Model(tiny_image_cfg(**{"modalities.image.transformer_decoder": True}))
    assert isinstance(ImageEncoder.mask_sampler(tiny_image_cfg(**{"modalities.image.mask_length": 1})
                                                .modalities.image), BlockMaskSampler)
