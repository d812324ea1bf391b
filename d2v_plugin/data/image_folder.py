"""Image folders (`<root>/<split>/<class>/<image>`) and a loader that always returns RGB.

The layout is the one torchvision's ``ImageFolder`` and most image corpora use: one
sub-folder per class, classes sorted by name so label indices do not depend on the file
system. Reading goes through Pillow, and every way a file can be unusable (not an image,
truncated, too large to decode safely) becomes an ``ImageFileError`` naming the file, so a
bad file among a million stops a run with a message that says which one.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageFile

logger = logging.getLogger(__name__)

# Lower-case suffixes read by Pillow's built-in plugins (no extra codecs needed).
IMAGE_EXTENSIONS: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif",
                                     ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga")

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


class ImageFileError(ValueError):
    """An image file (or image folder) that cannot be used; the message names it."""


@dataclass(frozen=True)
class ImageFolder:
    """The images of one split, in a fixed order.

    split_dir: the folder that was scanned (``<root>/<split>``).
    classes:   class names; ``labels`` index into this tuple.
    paths:     image paths, sorted by (class, relative path).
    labels:    (N,) int64 class index of each path.
    """

    split_dir: str
    classes: Tuple[str, ...]
    paths: Tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def _visible(name: str) -> bool:
    return not name.startswith(".")  # .DS_Store, ._foo.jpg (macOS), .ipynb_checkpoints


def _image_files(class_dir: str) -> Iterator[str]:
    """Image files under ``class_dir`` (recursively, following links), in sorted order."""
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))  # walk order = sorted order
        for name in sorted(filenames):
            if _visible(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.join(dirpath, name)


def scan_image_folder(root: str, split: str, classes: Optional[Sequence[str]] = None) -> ImageFolder:
    """List the images of ``<root>/<split>/<class>/...``.

    Without ``classes`` the class list is the split's sorted sub-folder names. Pass the
    training split's ``classes`` when scanning valid/test so a class missing there does not
    shift every later label; a sub-folder that is not in ``classes`` is then an error.
    Hidden files and folders and files with other suffixes are skipped.
    """
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise ImageFileError(f"{split_dir}: split folder not found (expected "
                             f"<root>/{split}/<class>/<image> under {root})")
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and _visible(e.name))
    if classes is None:
        classes = found
    classes = tuple(classes)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ImageFileError(f"{split_dir}: class folders {unknown} are not among the "
                             f"{len(classes)} known classes {list(classes)}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        files = list(_image_files(class_dir)) if os.path.isdir(class_dir) else []
        if not files and name in found:
            logger.warning("%s: class folder holds no images", class_dir)
        paths += files
        labels += [label] * len(files)
    if not paths:
        loose = [n for n in os.listdir(split_dir) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
        hint = (f"; {len(loose)} image(s) lie directly in it, but images must be in one "
                f"sub-folder per class" if loose else "")
        raise ImageFileError(f"{split_dir}: no images (suffixes {', '.join(IMAGE_EXTENSIONS)}) "
                             f"in class sub-folders{hint}")
    logger.info("%s: %d images in %d classes", split_dir, len(paths), len(classes))
    return ImageFolder(split_dir, classes, tuple(paths), np.asarray(labels, dtype=np.int64))


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make Pillow raise on truncated data even if some library set the global flag.

    With ``LOAD_TRUNCATED_IMAGES = True`` Pillow silently fills the missing part with
    grey; we would rather fail. The flag is module-global, so it is set and restored
    around each load (data-loader workers are processes, not threads).
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _high_depth_to_8bit(img: Image.Image) -> Image.Image:
    """Map 16/32-bit integer and float grey images to 8 bits by value range, not by clipping.

    Pillow's own ``convert("L")`` clips these at 255, which turns most 16-bit images white.
    I;16 modes and "I" images with values above 255 (16-bit PNG/TIFF) are scaled by
    255/65535; "F" images in [0, 1] are scaled by 255, other float images are clipped.
    """
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.size and arr.max() > 255):
        arr = arr.astype(np.float64) * (255.0 / 65535.0)
    elif img.mode == "F" and arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image, background: Tuple[int, int, int] = WHITE) -> Image.Image:
    """Convert a Pillow image of any mode to 8-bit RGB.

    Transparent images (RGBA, LA, palette or RGB with a transparent colour) are composited
    on ``background`` (white by default, what a browser shows; pass ``BLACK`` for
    white-on-black material). Simply dropping alpha, as ``convert("RGB")`` does, exposes
    whatever colour happens to sit under transparent pixels. CMYK, YCbCr, palette, 1-bit and
    grey images go through Pillow's own conversion; 16-bit and float grey images are
    rescaled first (see ``_high_depth_to_8bit``). Only the first frame of an animated or
    multi-page file is used. EXIF orientation is not applied (as torchvision's loader).
    """
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _high_depth_to_8bit(img)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str, background: Tuple[int, int, int] = WHITE) -> Image.Image:
    """Decode ``path`` completely and return it as RGB, or raise ``ImageFileError``.

    ``Image.open`` only reads the header; ``load()`` decodes the pixels, which is where
    truncated files fail, so it runs here rather than somewhere inside a transform.
    """
    try:
        with _strict_truncation(), Image.open(path) as img:
            img.load()
    except FileNotFoundError:
        raise ImageFileError(f"{path}: file not found") from None
    except Image.DecompressionBombError as e:
        raise ImageFileError(f"{path}: too many pixels to decode safely ({e}); raise "
                             f"PIL.Image.MAX_IMAGE_PIXELS if the file is trusted") from None
    except Image.UnidentifiedImageError:
        raise ImageFileError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # OSError "image file is truncated": cut short; the others: corrupt headers/chunks.
        raise ImageFileError(f"{path}: unreadable or truncated image ({type(e).__name__}: {e})") from None
    try:
        return to_rgb(img, background)
    except (ValueError, OSError) as e:
        raise ImageFileError(f"{path}: cannot convert mode {img.mode} to RGB ({e})") from None
