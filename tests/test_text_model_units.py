"""Unit tests of the TEXT modality with a tiny model (depth 2, dim 32, a 30-symbol dictionary)."""
import pytest
import torch
from fairseq.data import Dictionary
from omegaconf import OmegaConf

from d2v_plugin.masking import sample_block_mask
from d2v_plugin.models.config import Data2Vec2Config
from d2v_plugin.models.data2vec2 import Data2Vec2Model
from d2v_plugin.models.decoder import Decoder1d

PAD = 1


class _Task:
    def __init__(self, words: int = 25):
        self.source_dictionary = Dictionary()
        for i in range(words):
            self.source_dictionary.add_symbol(f"w{i}")
        self.source_dictionary.add_symbol("<mask>")


def text_model(**overrides) -> Data2Vec2Model:
    cfg = OmegaConf.structured(Data2Vec2Config)
    cfg.depth, cfg.embed_dim, cfg.num_heads = 2, 32, 4
    cfg.clone_batch, cfg.average_top_k_layers = 3, 2
    cfg.supported_modality, cfg.ema_encoder_only, cfg.layerdrop = "TEXT", True, 0.0
    cfg.modalities.text.max_source_positions = 16
    cfg.modalities.text.decoder.decoder_dim = 16
    cfg.modalities.text.decoder.decoder_layers = 2
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    torch.manual_seed(0)
    model = Data2Vec2Model(cfg, task=_Task())
    # init_bert_params zeroes the position rows' std to 0.02; make positions matter visibly
    with torch.no_grad():
        model.modality_encoders["TEXT"].local_encoder.embed_positions.weight.normal_()
        model.modality_encoders["TEXT"].local_encoder.embed_positions.weight[PAD].zero_()
    return model.eval()


def _tokens(*rows, length=None):
    length = length or max(len(r) for r in rows)
    out = torch.full((len(rows), length), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


def test_text_encoder_builds_the_reference_layout_from_the_task_dictionary():
    model = text_model()
    encoder = model.modality_encoders["TEXT"]
    assert encoder.local_encoder.embed_tokens.weight.shape == (len(_Task().source_dictionary), 32)
    assert encoder.local_encoder.embed_tokens.padding_idx == PAD
    # fairseq's learned positions: max_source_positions + pad + 1 rows
    assert encoder.local_encoder.embed_positions.weight.shape == (16 + PAD + 1, 32)
    assert encoder.context_encoder.norm is None  # no prenet -> no context layer norm
    assert all(k.split(".")[0].isdigit() for k in model.teacher.state_dict()), "teacher = blocks only"


def test_text_encoder_needs_a_task_dictionary():
    cfg = OmegaConf.structured(Data2Vec2Config)
    cfg.supported_modality = "TEXT"
    with pytest.raises(ValueError, match="source_dictionary"):
        Data2Vec2Model(cfg)


def test_positions_count_non_pad_tokens_and_padding_gets_the_zero_row():
    """Token i (0-based, non-pad) gets position row pad + 1 + i; pad tokens row pad (zeros)."""
    encoder = text_model().modality_encoders["TEXT"]
    tokens = _tokens([0, 5, 6, 2], length=6)
    positions = encoder.local_encoder.embed_positions(tokens)            # (1, 6, D)
    table = encoder.local_encoder.embed_positions.weight
    torch.testing.assert_close(positions[0, :4], table[PAD + 1:PAD + 5])
    assert float(positions[0, 4:].detach().abs().max()) == 0.0


def test_same_token_at_another_position_gets_other_local_features():
    encoder = text_model().modality_encoders["TEXT"]
    x = encoder.local_features(_tokens([0, 7, 7, 7, 2]))
    assert not torch.allclose(x[0, 1], x[0, 2]) and not torch.allclose(x[0, 2], x[0, 3])


def test_right_padding_does_not_change_the_features_of_real_tokens():
    """Extra pad tokens (masked out of attention) leave every real token's output unchanged,
    with the padding mask given or computed from the pad tokens."""
    model = text_model()
    short = _tokens([0, 5, 9, 4, 2])
    padded = _tokens([0, 5, 9, 4, 2], [0, 8, 2], length=9)
    with torch.no_grad():
        alone = model.extract_features(short)
        given = model.extract_features(padded, padding_mask=padded.eq(PAD))
        computed = model.extract_features(padded)
    assert alone["padding_mask"] is None
    assert torch.equal(computed["padding_mask"], padded.eq(PAD))
    torch.testing.assert_close(given["x"][0, :5], alone["x"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(computed["x"], given["x"], atol=0, rtol=0)
    for ours, ref in zip(given["layer_results"], alone["layer_results"]):
        torch.testing.assert_close(ours[0, :5], ref[0], atol=1e-5, rtol=0)


def test_text_input_errors_name_the_problem():
    model = text_model()
    encoder = model.modality_encoders["TEXT"]
    with pytest.raises(ValueError, match="max_source_positions"):
        encoder.local_features(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="dictionary"):
        encoder.local_features(torch.tensor([[0, 99, 2]]))
    with pytest.raises(ValueError, match="integer ids"):
        encoder.local_features(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="shape"):
        model.extract_features(_tokens([0, 5, 2]), padding_mask=torch.zeros(1, 4, dtype=torch.bool))


def test_text_decoder_has_no_residual_and_two_projection_layers():
    """The paper's text decoder: convs without residual, then Linear(d, 2d) -> GELU -> Linear(2d, D)."""
    model = text_model()
    decoder = model.modality_encoders["TEXT"].decoder
    assert [tuple(b[0].weight.shape) for b in decoder.blocks] == [(16, 32, 9), (16, 16, 9)]
    assert [tuple(m.weight.shape) for m in decoder.proj if isinstance(m, torch.nn.Linear)] == [(32, 16), (32, 32)]
    x = torch.randn(6, 11, 32)                                                      # (R, T, D)
    with torch.no_grad():
        y = decoder(x)
        h = x.transpose(1, 2)
        for block in decoder.blocks:
            h = block(h)                                                            # no residual
        expected = decoder.proj(h.transpose(1, 2))
    assert y.shape == (6, 11, 32)
    torch.testing.assert_close(y, expected, atol=0, rtol=0)


@pytest.mark.parametrize("layers,residual", [(5, False), (3, True)])
def test_decoder1d_keeps_rows_and_length(layers, residual):
    from d2v_plugin.models.config import DecoderConfig

    cfg = DecoderConfig(decoder_dim=8, decoder_groups=1, decoder_kernel=9, decoder_layers=layers,
                        decoder_residual=residual, projection_layers=2, projection_ratio=2.0)
    assert Decoder1d(cfg, 12)(torch.randn(4, 7, 12)).shape == (4, 7, 12)


def test_text_pretraining_forward_on_a_padded_batch():
    """M masks per sample; the loss has one row per masked position (padded ones included,
    as in the reference) and gradients reach the token embedding."""
    model = text_model().train()
    tokens = _tokens([0, 5, 9, 4, 6, 7, 8, 2], [0, 8, 3, 2], length=8)
    mask = sample_block_mask(2 * 3, 8, 0.48, 1, generator=torch.Generator().manual_seed(0))
    result = model(tokens, padding_mask=tokens.eq(PAD), precomputed_mask=mask)
    loss = result.losses["TEXT_regression"]
    assert loss.shape == (int(mask.sum()), 32) and int(mask.sum()) == 6 * int(8 * 0.48)
    assert float(result.sample_size) == int(mask.sum())
    loss.sum().backward()
    grad = model.modality_encoders["TEXT"].local_encoder.embed_tokens.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    assert float(grad[PAD].abs().max()) == 0.0  # the pad embedding stays zero
