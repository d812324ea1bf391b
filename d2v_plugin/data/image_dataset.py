"""Image-folder pretraining dataset: one augmented view per image, plus the student masks
of the batch expander (``expander.py``).

Each item is one augmented view of one image: the model shows that same view to the
teacher (unmasked, once) and to the student (M = clone_batch masked copies), so the
dataset never makes two views. As in the audio dataset, every random draw is seeded from
(seed, epoch, ids): the crop/flip from the item's index, the masks from the batch's ids, so
a resumed run sees the same views and masks as an uninterrupted one.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import data_utils
from PIL import Image

from .expander import BatchExpander
from .image_folder import WHITE, ImageFolder, load_rgb, scan_image_folder
from .pretraining_dataset import PretrainingDataset, seeded_generator

logger = logging.getLogger(__name__)

# (RGB image, generator) -> (3, H, W) float32; PretrainingAugmentation or EvalTransform.
ImageTransform = Callable[[Image.Image, torch.Generator], torch.Tensor]

# Leading number of the augmentation seed, so an item's crop stream never equals the mask
# stream of a one-image batch, which is seeded from (seed, epoch, id).
_AUGMENT_STREAM = 0x1A6E_5EED


class ImagePretrainingDataset(PretrainingDataset):
    """Images of ``<root>/<split>/<class>/...`` as fixed-size tensors with class labels.

    num_patches:  tokens per image seen by the model (patches only, no CLS token); it is
                  each item's size, so ``max_tokens`` batching works, but images are
                  usually batched by count (``dataset.batch_size``).
    expander:     when given, the collater adds its (B * M, num_patches) masks as
                  ``net_input["precomputed_mask"]``. Its sampler must be picklable (a
                  module-level function or functools.partial, not a lambda) when
                  data-loader workers are spawned.
    classes:      the class list to label with (pass the train split's for valid/test).
    background:   colour transparent pixels are composited on.
    """

    def __init__(self, root: str, split: str, transform: ImageTransform, num_patches: int,
                 expander: Optional[BatchExpander] = None,
                 seed: int = 1, shuffle: bool = True, classes: Optional[Sequence[str]] = None,
                 background: Tuple[int, int, int] = WHITE):
        super().__init__(seed=seed, shuffle=shuffle, expander=expander)
        if num_patches < 1:
            raise ValueError(f"num_patches must be >= 1, got {num_patches}")
        self.folder: ImageFolder = scan_image_folder(root, split, classes)
        self.classes = self.folder.classes
        self.transform = transform
        self.num_patches = num_patches
        self.background = background
        self.sizes = np.full(len(self.folder), num_patches, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> Dict:
        img = load_rgb(self.folder.paths[index], self.background)
        gen = seeded_generator(_AUGMENT_STREAM, self.seed, self.epoch, index)
        source = self.transform(img, gen)  # (3, H, W)
        return {"id": index, "source": source, "label": int(self.folder.labels[index])}

    def ordered_indices(self) -> np.ndarray:
        # All sizes are equal, so the base class's size sort is not needed; this plain
        # seeded permutation is the order existing runs (and their resumes) were made with.
        if not self.shuffle:
            return np.arange(len(self))
        with data_utils.numpy_seed(self.seed, self.epoch):
            return np.random.permutation(len(self))

    def collater(self, samples: List[Dict]) -> Dict:
        if not samples:
            return {}
        ids = [s["id"] for s in samples]
        shapes = {tuple(s["source"].shape) for s in samples}
        if len(shapes) != 1:
            raise ValueError(f"images of one batch must share a shape, got {sorted(shapes)} "
                             f"(the transform must crop/resize to a fixed input_size)")
        batch_size = len(samples)
        batch = {
            "id": torch.LongTensor(ids),
            "net_input": {"source": torch.stack([s["source"] for s in samples])},  # (B, 3, H, W)
            "label": torch.LongTensor([s["label"] for s in samples]),
            "nsentences": batch_size,
            "ntokens": batch_size * self.num_patches,
        }
        mask = self.student_masks(ids, self.num_patches)
        if mask is not None:
            batch["net_input"]["precomputed_mask"] = mask  # (B*M, num_patches)
        return batch
