"""The pretraining task: reads manifests and owns the multi-mask batch expander."""
import logging
import os
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from ..data.audio_dataset import AudioPretrainingDataset, ExpanderConfig
from ..masking import parse_conv_spec

logger = logging.getLogger(__name__)


@dataclass
class Data2VecPretrainingConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "folder holding {split}.tsv manifests"})
    modality: ChoiceEnum(["audio"]) = field(default="audio", metadata={"help": "input modality"})
    sample_rate: int = field(default=16000, metadata={"help": "every file must have this rate"})
    normalize: bool = field(default=True, metadata={"help": "zero mean, unit variance per utterance"})
    min_sample_size: int = field(default=32000, metadata={"help": "skip (count, warn) shorter utterances"})
    max_sample_size: int = field(default=320000, metadata={"help": "random crop to at most this many samples"})
    # The expander's masking: linked to the model's values so they can't disagree.
    clone_batch: int = II("model.clone_batch")
    mask_prob: float = II("model.modalities.audio.mask_prob")
    mask_length: int = II("model.modalities.audio.mask_length")
    mask_prob_adjust: float = II("model.modalities.audio.mask_prob_adjust")
    inverse_mask: bool = II("model.modalities.audio.inverse_mask")
    feature_encoder_spec: str = II("model.modalities.audio.feature_encoder_spec")
    seed: int = II("common.seed")


@register_task("data2vec_pretraining", dataclass=Data2VecPretrainingConfig)
class Data2VecPretrainingTask(FairseqTask):
    cfg: Data2VecPretrainingConfig

    @classmethod
    def setup_task(cls, cfg: Data2VecPretrainingConfig, **kwargs):
        return cls(cfg)

    def load_dataset(self, split: str, **kwargs) -> None:
        cfg = self.cfg
        expander = ExpanderConfig(cfg.clone_batch, cfg.mask_prob, cfg.mask_length,
                                  cfg.mask_prob_adjust, cfg.inverse_mask)
        self.datasets[split] = AudioPretrainingDataset(
            os.path.join(cfg.data, f"{split}.tsv"), parse_conv_spec(cfg.feature_encoder_spec),
            sample_rate=cfg.sample_rate, min_sample_size=cfg.min_sample_size,
            max_sample_size=cfg.max_sample_size, normalize=cfg.normalize, expander=expander,
            seed=cfg.seed)
        logger.info(f"{split}: {len(self.datasets[split])} utterances")

    def build_model(self, model_cfg, from_checkpoint: bool = False):
        model = super().build_model(model_cfg, from_checkpoint)
        if getattr(model, "cfg", None) is not None and hasattr(model.cfg, "clone_batch"):
            if model.cfg.clone_batch != self.cfg.clone_batch:
                raise ValueError(f"task.clone_batch={self.cfg.clone_batch} but "
                                 f"model.clone_batch={model.cfg.clone_batch}")
        return model

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None

    def max_positions(self):
        return None
