"""Image pretraining task: image folders, the usual augmentation, the batch expander's masks.

``data`` is an image-folder root (``<data>/<split>/<class>/<image>``, any format Pillow
reads; grey, palette and RGBA images are converted to RGB). The training split gets one
augmented view per image (random resized crop, optional horizontal flip, normalisation),
shown unmasked to the teacher and as M = ``model.clone_batch`` masked copies to the student;
every other split gets the evaluation transform (resize + centre crop). Masks come from the
model's image encoder (2D inverse block masking) and are drawn in the data-loader workers.

Also registered as ``mae_image_pretraining``, the reference implementation's task name, so
its image checkpoints (which record that task) load through
``fairseq.checkpoint_utils.load_model_ensemble_and_task`` with d2v_plugin installed. The
reference's task options are accepted with their reference defaults; those we do not
implement are refused when a dataset is loaded, never silently ignored.
"""
import logging
from dataclasses import dataclass, field
from typing import Any, List, Optional

from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import register_task
from omegaconf import II, MISSING

from ..data.image_dataset import ImagePretrainingDataset
from ..data.image_transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, PretrainingAugmentation
from .base import MaskedPretrainingTask

logger = logging.getLogger(__name__)


@dataclass
class ImagePretrainingConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "image-folder root: <data>/<split>/<class>/<image>"})
    input_size: int = field(
        default=224, metadata={"help": "side of the square crops; must equal model.modalities.image.input_size"})
    crop_scale: List[float] = field(
        default_factory=lambda: [0.2, 1.0],
        metadata={"help": "random resized crop: [min, max] fraction of the image area (MAE / data2vec 2.0: "
                          "[0.2, 1.0])"})
    crop_ratio: List[float] = field(
        default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0], metadata={"help": "random resized crop: aspect ratio range"})
    hflip_prob: float = field(
        default=0.5, metadata={"help": "horizontal flip probability (0 where mirroring changes meaning: digits, text)"})
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN), metadata={"help": "per-channel mean"})
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD), metadata={"help": "per-channel std"})
    interpolation: str = field(default="bicubic", metadata={"help": "nearest, bilinear, bicubic or lanczos"})
    eval_crop_pct: float = field(
        default=0.875, metadata={"help": "evaluation: resize the shorter side to input_size / eval_crop_pct, then "
                                         "centre-crop input_size (1.0: resize straight to input_size)"})
    train_subset: str = II("dataset.train_subset")
    seed: int = II("common.seed")


def split_transform(cfg: ImagePretrainingConfig, train: bool):
    """The augmentation for the training split, the evaluation transform for the others."""
    if train:
        return PretrainingAugmentation(cfg.input_size, scale=tuple(cfg.crop_scale), ratio=tuple(cfg.crop_ratio),
                                       hflip_prob=cfg.hflip_prob, mean=tuple(cfg.mean), std=tuple(cfg.std),
                                       interpolation=cfg.interpolation)
    return EvalTransform(cfg.input_size, crop_pct=cfg.eval_crop_pct, mean=tuple(cfg.mean),
                         std=tuple(cfg.std), interpolation=cfg.interpolation)


@register_task("data2vec_image_pretraining", dataclass=ImagePretrainingConfig)
class ImagePretrainingTask(MaskedPretrainingTask):
    """Images in class folders; the collater adds the batch expander's masks."""

    cfg: ImagePretrainingConfig
    modality = "IMAGE"

    @classmethod
    def setup_task(cls, cfg: ImagePretrainingConfig, **kwargs):
        return cls(cfg)

    def build_model(self, model_cfg, from_checkpoint: bool = False):
        model = super().build_model(model_cfg, from_checkpoint)
        if self.modality_cfg.input_size != self.cfg.input_size:
            raise ValueError(f"task.input_size={self.cfg.input_size} but the model expects "
                             f"model.modalities.image.input_size={self.modality_cfg.input_size}")
        return model

    @property
    def num_patches(self) -> int:
        return (self.modality_cfg.input_size // self.modality_cfg.patch_size) ** 2

    def load_dataset(self, split: str, **kwargs) -> None:
        self.require_model()
        train = split == self.cfg.train_subset
        self.datasets[split] = ImagePretrainingDataset(
            self.cfg.data, split, split_transform(self.cfg, train),
            num_patches=self.num_patches, expander=self.expander,
            seed=self.cfg.seed, shuffle=train)
        logger.info(f"{split}: {len(self.datasets[split])} images "
                    f"({'augmented' if train else 'evaluation transform'})")


@dataclass
class MAEImagePretrainingConfig(ImagePretrainingConfig):
    """The reference's ``mae_image_pretraining`` options, with its defaults."""

    multi_data: Optional[List[str]] = field(default=None, metadata={"help": "reference option (not supported)"})
    local_cache_path: Optional[str] = field(default=None, metadata={"help": "reference option (ignored)"})
    key: str = field(default="source", metadata={"help": "reference option: net_input key of the image"})
    beit_transforms: bool = field(default=False, metadata={"help": "reference option (not supported)"})
    target_transform: bool = field(default=False, metadata={"help": "reference option (not supported)"})
    no_transform: bool = field(default=False, metadata={"help": "reference option (not supported)"})
    rebuild_batches: bool = field(default=True, metadata={"help": "reference option (ignored)"})
    precompute_mask_config: Optional[Any] = field(
        default=None, metadata={"help": "reference option (ignored: masks are always precomputed here)"})
    subsample: float = field(default=1.0, metadata={"help": "reference option (only 1.0)"})
    dataset_type: str = field(default="imagefolder", metadata={"help": "reference option (only imagefolder)"})


@register_task("mae_image_pretraining", dataclass=MAEImagePretrainingConfig)
class MAEImagePretrainingTask(ImagePretrainingTask):
    """The reference implementation's task name, served by our image task (checkpoints that
    record ``task._name: mae_image_pretraining`` load as they are)."""

    cfg: MAEImagePretrainingConfig

    def load_dataset(self, split: str, **kwargs) -> None:
        cfg = self.cfg
        unsupported = [name for name, bad in [
            ("multi_data", bool(cfg.multi_data)), ("beit_transforms", cfg.beit_transforms),
            ("target_transform", cfg.target_transform), ("no_transform", cfg.no_transform),
            ("subsample", cfg.subsample != 1.0), ("dataset_type", cfg.dataset_type != "imagefolder"),
            ("key", cfg.key != "source")] if bad]
        if unsupported:
            raise NotImplementedError(f"mae_image_pretraining options {unsupported} are not supported; "
                                      f"use task._name=data2vec_image_pretraining")
        super().load_dataset(split, **kwargs)
