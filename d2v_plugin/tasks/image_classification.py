"""Image classification fine-tuning: image folders with labels, for ``data2vec_classification``.

The image counterpart of fairseq's ``sentence_prediction``, and used with its criterion
(``criterion._name: sentence_prediction``: cross-entropy, accuracy, ``checkpoint_best.pt`` by
valid accuracy). The classes are the training split's sub-folders (``<data>/train/<class>/``);
valid/test images are labelled with the same list. Training images get the pretraining
augmentation (random resized crop, optional flip, normalisation), the other splits the
evaluation transform, with the options of ``data2vec_image_pretraining``.
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, List

from fairseq.tasks import register_task

from ..data.image_dataset import ImagePretrainingDataset
from ..data.image_folder import scan_image_folder
from .base import RawInputTask
from .image_pretraining import ImagePretrainingConfig, split_transform

logger = logging.getLogger(__name__)


@dataclass
class ImageClassificationConfig(ImagePretrainingConfig):
    classification_head_name: str = field(
        default="sentence_classification_head",
        metadata={"help": "head name; must equal criterion.classification_head_name"})


class ImageClassificationDataset(ImagePretrainingDataset):
    """Unmasked images with their class as ``target`` (what fairseq's criteria read)."""

    def collater(self, samples: List[Dict]) -> Dict:
        batch = super().collater(samples)
        if batch:
            batch["target"] = batch.pop("label")
        return batch


@register_task("data2vec_image_classification", dataclass=ImageClassificationConfig)
class ImageClassificationTask(RawInputTask):
    cfg: ImageClassificationConfig

    def __init__(self, cfg: ImageClassificationConfig, classes: List[str]):
        super().__init__(cfg)
        self.classes = classes
        self.num_patches = 1  # set from the model's image encoder in build_model

    @classmethod
    def setup_task(cls, cfg: ImageClassificationConfig, **kwargs):
        classes = list(scan_image_folder(cfg.data, cfg.train_subset).classes)
        logger.info("%d classes: %s", len(classes), ", ".join(classes))
        return cls(cfg, classes)

    def build_model(self, model_cfg, from_checkpoint: bool = False):
        model = super().build_model(model_cfg, from_checkpoint)
        encoder = getattr(model, "encoder", None)
        if getattr(encoder, "modality", None) != "IMAGE":
            raise ValueError(f"data2vec_image_classification needs a data2vec_classification model on an "
                             f"IMAGE checkpoint, got {getattr(encoder, 'modality', type(model).__name__)}")
        image_cfg = encoder.cfg.modalities.image
        if image_cfg.input_size != self.cfg.input_size:
            raise ValueError(f"task.input_size={self.cfg.input_size} but the checkpoint expects "
                             f"{image_cfg.input_size}")
        self.num_patches = (image_cfg.input_size // image_cfg.patch_size) ** 2
        model.register_classification_head(self.cfg.classification_head_name, num_classes=len(self.classes))
        return model

    def load_dataset(self, split: str, **kwargs) -> None:
        train = split == self.cfg.train_subset
        self.datasets[split] = ImageClassificationDataset(
            self.cfg.data, split, split_transform(self.cfg, train), num_patches=self.num_patches, seed=self.cfg.seed,
            shuffle=train, classes=self.classes)
        logger.info("%s: %d images", split, len(self.datasets[split]))

    @property
    def label_dictionary(self):
        return None  # class indices come from the folder names (self.classes)
