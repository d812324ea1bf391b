"""The audio pretraining task (registered as ``data2vec_pretraining``): wav manifests, batched
by the audio dataset with the batch expander's masks."""
import logging
import os
from dataclasses import dataclass, field

from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import register_task
from omegaconf import II, MISSING

from ..data.audio_dataset import AudioPretrainingDataset
from .base import MaskedPretrainingTask

logger = logging.getLogger(__name__)


@dataclass
class Data2VecPretrainingConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "folder holding {split}.tsv manifests"})
    sample_rate: int = field(default=16000, metadata={"help": "every file must have this rate"})
    normalize: bool = field(default=True, metadata={"help": "zero mean, unit variance per utterance"})
    min_sample_size: int = field(default=32000, metadata={"help": "skip (count, warn) shorter utterances"})
    max_sample_size: int = field(default=320000, metadata={"help": "random crop to at most this many samples"})
    seed: int = field(default=II("common.seed"), metadata={"help": "seeds the order, crops and masks"})


@register_task("data2vec_pretraining", dataclass=Data2VecPretrainingConfig)
class Data2VecPretrainingTask(MaskedPretrainingTask):
    """Audio: manifests of wav files, cropped per batch, M masks per utterance."""

    cfg: Data2VecPretrainingConfig
    modality = "AUDIO"

    def __init__(self, cfg: Data2VecPretrainingConfig):
        super().__init__(cfg)
        self.conv_spec = None

    @classmethod
    def setup_task(cls, cfg: Data2VecPretrainingConfig, **kwargs):
        return cls(cfg)

    def load_dataset(self, split: str, **kwargs) -> None:
        cfg = self.cfg
        self.require_model()
        self.datasets[split] = AudioPretrainingDataset(
            os.path.join(cfg.data, f"{split}.tsv"), self.conv_spec,
            sample_rate=cfg.sample_rate, min_sample_size=cfg.min_sample_size,
            max_sample_size=cfg.max_sample_size, normalize=cfg.normalize, expander=self.expander,
            seed=cfg.seed)
        logger.info(f"{split}: {len(self.datasets[split])} utterances")

    def build_model(self, model_cfg, from_checkpoint: bool = False):
        model = super().build_model(model_cfg, from_checkpoint)
        self.conv_spec = model.modality_encoders[self.modality].conv_spec  # parsed once, by the encoder
        return model
