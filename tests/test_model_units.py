"""Unit tests of the model's stages with a tiny model (depth 2, dim 32)."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from d2v_plugin.masking import sample_block_mask
from d2v_plugin.models.blocks import Block, attention_mask
from d2v_plugin.models.config import DecoderConfig
from d2v_plugin.models.objective import RepresentationCollapse, batch_std, target_slowness
from d2v_plugin.models.decoder import Decoder1d
from d2v_plugin.models.ema import EMATeacher, ema_decay_at
from d2v_plugin.models.targets import average_top_k
from tiny_model import tiny_model


def test_importing_the_plugin_does_not_import_torchaudio():
    import d2v_plugin  # noqa: F401

    assert "torchaudio" not in sys.modules


def test_ema_decay_moves_linearly_then_stays():
    assert ema_decay_at(0, 0.999, 0.99999, 1000) == 0.999
    assert ema_decay_at(500, 0.999, 0.99999, 1000) == pytest.approx(0.999 + 0.5 * (0.99999 - 0.999))
    assert ema_decay_at(1000, 0.999, 0.99999, 1000) == 0.99999
    assert ema_decay_at(10**6, 0.999, 0.99999, 1000) == 0.99999


def test_ema_step_is_the_moving_average_and_teacher_is_frozen():
    student = torch.nn.Linear(3, 2)
    teacher = EMATeacher(student)
    assert not any(p.requires_grad for p in teacher.model.parameters()) and not teacher.model.training
    before = teacher.model.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.step(student, 0.9)
    torch.testing.assert_close(teacher.model.weight, 0.9 * before + 0.1 * student.weight)


def test_set_num_updates_steps_the_teacher_once_per_update():
    model = tiny_model()
    model.train()
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight.add_(1.0)
    teacher_w = lambda: model.teacher.model.blocks[0].mlp.fc1.weight.clone()  # noqa: E731
    w0 = teacher_w()
    model.set_num_updates(1)
    w1 = teacher_w()
    assert not torch.equal(w0, w1)
    model.set_num_updates(1)  # gradient accumulation calls it again with the same count
    assert torch.equal(w1, teacher_w())
    decay = ema_decay_at(1, model.cfg.ema_decay, model.cfg.ema_end_decay, model.cfg.ema_anneal_end_step)
    assert model.teacher.decay == decay
    model.eval()
    model.set_num_updates(2)  # never in eval mode
    assert torch.equal(w1, teacher_w())


def test_teacher_encodes_each_sample_once_and_targets_line_up_with_the_student_rows():
    torch.manual_seed(0)
    model = tiny_model().eval()
    B, M = 2, model.cfg.clone_batch
    seen = []
    model.teacher.model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    decoded = []
    model.modality_encoders["AUDIO"].decoder.register_forward_hook(lambda m, i, o: decoded.append(o))
    source = torch.randn(B, 16000)
    mask = sample_block_mask(B * M, 49, 0.5, 5, 0.05, generator=torch.Generator().manual_seed(0))
    out = model(source, precomputed_mask=mask)
    assert seen == [B]  # one teacher pass for B samples, not B * M
    local = model.modality_encoders["AUDIO"].local_features(source)
    targets = model.teacher_targets(source, local, None)                 # (B, T, D)
    prediction = decoded[0]                                       # (B*M, T, D)
    rows, cols = mask.nonzero(as_tuple=True)
    expected = (prediction[rows, cols] - targets[rows // M, cols]) ** 2 / math.sqrt(32)
    torch.testing.assert_close(out.losses["AUDIO_regression"], expected)
    assert out.sample_size == mask.sum()


def test_targets_equal_plain_instance_norm_of_top_k_layers_averaged():
    torch.manual_seed(1)
    layers = [torch.randn(2, 7, 5) * (i + 1) + i for i in range(4)]
    expected = torch.zeros(2, 7, 5)
    for y in layers[-3:]:
        mean = y.mean(dim=1, keepdim=True)
        var = ((y - mean) ** 2).mean(dim=1, keepdim=True)
        expected += (y - mean) / torch.sqrt(var + 1e-5)
    expected /= 3
    torch.testing.assert_close(average_top_k(layers, 3), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [4, 0])
def test_decoder_maps_rows_by_time_by_dim_to_the_same_shape(layers):
    decoder = Decoder1d(DecoderConfig(decoder_dim=16, decoder_groups=4, decoder_kernel=7,
                                      decoder_layers=layers), embed_dim=32)
    assert decoder(torch.randn(6, 49, 32)).shape == (6, 49, 32)
    if layers == 0:
        assert isinstance(decoder.proj, torch.nn.Linear) and len(decoder.blocks) == 0


def test_loss_is_l2_scaled_by_inverse_sqrt_dim_or_loss_scale_or_smooth_l1():
    source = torch.randn(2, 16000)
    mask = sample_block_mask(6, 49, 0.5, 5, generator=torch.Generator().manual_seed(0))

    def losses(**overrides):
        torch.manual_seed(0)
        model = tiny_model(**overrides).eval()
        model.modality_encoders["AUDIO"].cfg.mask_noise_std = 0.0
        captured = {}
        model.modality_encoders["AUDIO"].decoder.register_forward_hook(lambda m, i, o: captured.update(p=o))
        out = model(source, precomputed_mask=mask)
        local = model.modality_encoders["AUDIO"].local_features(source)
        y = model.teacher_targets(source, local, None)
        rows, cols = mask.nonzero(as_tuple=True)
        return out.losses["AUDIO_regression"], captured["p"][rows, cols], y[rows // 3, cols]

    loss, x, y = losses()
    torch.testing.assert_close(loss, F.mse_loss(x, y, reduction="none") / math.sqrt(32))
    loss, x, y = losses(loss_scale=0.5)
    torch.testing.assert_close(loss, F.mse_loss(x, y, reduction="none") * 0.5)
    loss, x, y = losses(loss_beta=0.25)
    torch.testing.assert_close(loss, F.smooth_l1_loss(x, y, reduction="none", beta=0.25) / math.sqrt(32))


def test_student_runs_only_on_kept_frames():
    model = tiny_model().eval()
    lengths = []
    model.blocks[0].register_forward_hook(lambda m, i, o: lengths.append(i[0].shape))
    mask = sample_block_mask(6, 49, 0.5, 5, generator=torch.Generator().manual_seed(0))
    model(torch.randn(2, 16000), precomputed_mask=mask)
    assert lengths[0] == (6, 49 - int(mask[0].sum()), 32)


def test_data2vec1_recipe_encodes_masked_frames_with_a_learned_embedding():
    model = tiny_model(encode_masked=True, clone_batch=1, loss_beta=0.25,
                       **{"modalities.audio.decoder.decoder_layers": 0}).train()
    lengths = []
    model.blocks[0].register_forward_hook(lambda m, i, o: lengths.append(i[0].shape[1]))
    mask = sample_block_mask(2, 49, 0.65, 10, generator=torch.Generator().manual_seed(0))
    out = model(torch.randn(2, 16000), precomputed_mask=mask)
    assert lengths == [49]
    loss = out.losses["AUDIO_regression"].sum()
    loss.backward()
    assert model.modality_encoders["AUDIO"].mask_emb.grad.abs().sum() > 0
    assert "modality_encoders.AUDIO.mask_emb" not in dict(model.teacher.model.named_parameters())


def test_fused_attention_with_alibi_and_padding_equals_plain_attention():
    torch.manual_seed(0)
    block = Block(32, 4, 4.0, 0, 0, 0, 0, 0, 1e-5, True, False, True).eval()
    x = torch.randn(3, 10, 32)
    bias = torch.randn(3, 4, 10, 10)
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[1, 7:] = True
    attn = block.attn
    q, k, v = attn.qkv(x).reshape(3, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-2, -1) / math.sqrt(8) + bias
    scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    plain = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 10, 32))
    fused = attn(x, attention_mask(bias, pad, x.dtype))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


def test_pre_ln_block_keeps_the_attention_residual():
    torch.manual_seed(0)
    block = Block(16, 2, 2.0, 0, 0, 0, 0, 0, 1e-5, True, True, True).eval()
    x = torch.randn(2, 5, 16)
    out, ffn = block(x, None)
    after_attn = x + block.attn(block.norm1(x), None)
    torch.testing.assert_close(out, after_attn + block.mlp(block.norm2(after_attn)))
    assert not torch.allclose(out, 2 * ffn)


def test_batch_std_is_mean_channel_std_over_all_positions():
    y = torch.randn(4, 9, 6) * torch.arange(1, 7)
    expected = torch.sqrt(y.reshape(-1, 6).var(0) + 1e-6).mean()
    torch.testing.assert_close(batch_std(y), expected)


def test_target_slowness_is_high_for_slow_targets_and_near_zero_for_white_noise():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(200, dtype=torch.float32)[None, :, None]
    phases = torch.rand(1, 1, 16, generator=g) * 6.28
    slow = torch.sin(t * (0.005 + 0.02 * torch.rand(1, 1, 16, generator=g)) + phases)  # periods > 250 frames
    fast = torch.sin(t * (0.5 + 2.5 * torch.rand(1, 1, 16, generator=g)) + phases)     # periods of 2-12 frames
    noise = torch.randn(2, 200, 16, generator=g)
    assert float(target_slowness(slow, 10)) > 0.9
    assert abs(float(target_slowness(noise, 10))) < 0.05
    assert float(target_slowness(slow, 10)) > float(target_slowness(fast, 10)) + 0.5
    assert target_slowness(noise, 0) is None and target_slowness(noise[:, :10], 10) is None


def test_target_slowness_ignores_pairs_that_touch_padding():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(1, 60, 8, generator=g)
    padded = torch.cat([real, torch.ones(1, 40, 8)], dim=1)   # constant padding: cosine 1 inside it
    pad = torch.zeros(1, 100, dtype=torch.bool)
    pad[:, 60:] = True
    torch.testing.assert_close(target_slowness(padded, 10, pad), target_slowness(real, 10))
    assert target_slowness(padded, 10, torch.ones(1, 100, dtype=torch.bool)) is None


def test_audio_model_reports_target_slowness_of_its_teacher_targets():
    model = tiny_model().train()
    mask = sample_block_mask(6, 49, 0.5, 5, generator=torch.Generator().manual_seed(0))
    source = torch.randn(2, 16000)
    out = model(source, precomputed_mask=mask)
    with torch.no_grad():
        local = model.modality_encoders["AUDIO"].local_features(source)
        targets = model.teacher_targets(source, local, None)
    torch.testing.assert_close(out.target_slowness, target_slowness(targets, model.cfg.slowness_lag))
    model.cfg.slowness_lag = 0
    assert model(source, precomputed_mask=mask).target_slowness is None


def test_collapse_guard_stops_training_with_a_clear_message():
    model = tiny_model(collapse_check_after=10, min_target_var=10.0).train()
    model.num_updates = 11
    mask = sample_block_mask(6, 49, 0.5, 5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(RepresentationCollapse, match="target_var"):
        model(torch.randn(2, 16000), precomputed_mask=mask)
    model.num_updates = 10  # not armed yet
    model(torch.randn(2, 16000), precomputed_mask=mask)


def test_extract_features_follows_the_wav2vec2_convention():
    model = tiny_model().eval()
    padding = torch.zeros(2, 16000, dtype=torch.bool)
    padding[1, 12000:] = True
    out = model.extract_features(torch.randn(2, 16000), padding_mask=padding, mask=False)
    assert out["x"].shape == (2, 49, 32) and len(out["layer_results"]) == 2
    assert out["padding_mask"][1, 37:].all() and not out["padding_mask"][1, :37].any()


def test_bf16_student_keeps_teacher_targets_and_loss_in_float32():
    """What fairseq's common.bf16=true does on CPU: the model and the batch are cast to bf16."""
    model = tiny_model().train().to(torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in model.teacher.model.parameters())
    mask = sample_block_mask(6, 49, 0.5, 5, generator=torch.Generator().manual_seed(0))
    out = model(torch.randn(2, 16000).to(torch.bfloat16), precomputed_mask=mask)
    loss = out.losses["AUDIO_regression"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.sum().backward()
    assert model.blocks[0].mlp.fc1.weight.grad.dtype == torch.bfloat16
    model.set_num_updates(1)
    assert all(p.dtype == torch.float32 for p in model.teacher.model.parameters())
    source = torch.randn(2, 16000).to(torch.bfloat16)
    local = model.modality_encoders["AUDIO"].local_features(source)
    assert model.teacher_targets(source, local, None).dtype == torch.float32
