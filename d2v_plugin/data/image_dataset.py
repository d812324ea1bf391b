"""Image-folder dataset whose collater is the multi-mask batch expander.

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
from fairseq.data import FairseqDataset, data_utils
from PIL import Image

from ..masking import seeded_generator
from .image_folder import WHITE, ImageFolder, load_rgb, scan_image_folder

logger = logging.getLogger(__name__)

# (num_rows, num_patches, generator) -> (num_rows, num_patches) bool, True = masked.
MaskSampler = Callable[[int, int, torch.Generator], torch.Tensor]
# (RGB image, generator) -> (3, H, W) float32; PretrainingAugmentation or EvalTransform.
ImageTransform = Callable[[Image.Image, torch.Generator], torch.Tensor]

# Leading number of the augmentation seed, so an item's crop stream never equals the mask
# stream of a one-image batch, which is seeded from (seed, epoch, id).
_AUGMENT_STREAM = 0x1A6E_5EED


class ImagePretrainingDataset(FairseqDataset):
    """Images of ``<root>/<split>/<class>/...`` as fixed-size tensors with class labels.

    num_patches:  tokens per image seen by the model (patches only, no CLS token); it is
                  each item's size, so ``max_tokens`` batching works, but images are
                  usually batched by count (``dataset.batch_size``).
    clone_batch:  M, masked copies per image made by the model.
    mask_sampler: when given, the collater adds ``net_input["precomputed_mask"]`` =
                  ``mask_sampler(B * clone_batch, num_patches, gen)``. It must be picklable
                  (a module-level function or functools.partial, not a lambda) when
                  data-loader workers are spawned.
    classes:      the class list to label with (pass the train split's for valid/test).
    background:   colour transparent pixels are composited on.
    """

    def __init__(self, root: str, split: str, transform: ImageTransform, num_patches: int,
                 clone_batch: int = 1, mask_sampler: Optional[MaskSampler] = None,
                 seed: int = 1, shuffle: bool = True, classes: Optional[Sequence[str]] = None,
                 background: Tuple[int, int, int] = WHITE):
        super().__init__()
        if num_patches < 1:
            raise ValueError(f"num_patches must be >= 1, got {num_patches}")
        if clone_batch < 1:
            raise ValueError(f"clone_batch must be >= 1, got {clone_batch}")
        self.folder: ImageFolder = scan_image_folder(root, split, classes)
        self.classes = self.folder.classes
        self.transform = transform
        self.num_patches = num_patches
        self.clone_batch = clone_batch
        self.mask_sampler = mask_sampler
        self.seed = seed
        self.shuffle = shuffle
        self.background = background
        self.epoch = 1
        self.sizes = np.full(len(self.folder), num_patches, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.folder)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return False  # crops, flips, masks and order depend on the epoch

    def __getitem__(self, index: int) -> Dict:
        img = load_rgb(self.folder.paths[index], self.background)
        gen = seeded_generator(_AUGMENT_STREAM, self.seed, self.epoch, index)
        source = self.transform(img, gen)  # (3, H, W)
        return {"id": index, "source": source, "label": int(self.folder.labels[index])}

    def num_tokens(self, index: int) -> int:
        return self.num_patches

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return self.sizes[indices]

    def size(self, index: int) -> int:
        return self.num_patches

    def ordered_indices(self) -> np.ndarray:
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
        if self.mask_sampler is not None:
            rows = batch_size * self.clone_batch
            gen = seeded_generator(self.seed, self.epoch, *ids)
            mask = self.mask_sampler(rows, self.num_patches, gen)  # (B*M, num_patches)
            if tuple(mask.shape) != (rows, self.num_patches) or mask.dtype != torch.bool:
                raise ValueError(f"mask_sampler returned {mask.dtype} {tuple(mask.shape)}, expected "
                                 f"torch.bool ({rows}, {self.num_patches})")
            batch["net_input"]["precomputed_mask"] = mask
        return batch
