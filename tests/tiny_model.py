"""A tiny data2vec 2.0 model for unit tests (depth 2, dim 32)."""
from omegaconf import OmegaConf

from d2v_plugin.models.config import Data2Vec2Config
from d2v_plugin.models.data2vec2 import Data2Vec2Model

TINY_SPEC = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]"


def tiny_cfg(**overrides):
    cfg = OmegaConf.structured(Data2Vec2Config)
    cfg.depth, cfg.embed_dim, cfg.num_heads = 2, 32, 4
    cfg.clone_batch, cfg.average_top_k_layers = 3, 2
    cfg.modalities.audio.feature_encoder_spec = TINY_SPEC
    cfg.modalities.audio.decoder.decoder_dim = 16
    cfg.modalities.audio.decoder.decoder_groups = 4
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def tiny_model(**overrides) -> Data2Vec2Model:
    return Data2Vec2Model(tiny_cfg(**overrides))
