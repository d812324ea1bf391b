"""Image data: the digits corpus generator, image-folder scanning and loading, the
augmentation, and the dataset/collater through fairseq's batching (real files, no training)."""
import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq.data import iterators
from PIL import Image, ImageFile

import make_image_corpus as mic
from d2v_plugin.data.expander import BatchExpander
from d2v_plugin.data.image_dataset import ImagePretrainingDataset
from d2v_plugin.data.image_folder import (BLACK, ImageFileError, load_rgb, scan_image_folder,
                                          to_rgb)
from d2v_plugin.data.image_transforms import (EvalTransform, PretrainingAugmentation,
                                              random_resized_crop_box)
from d2v_plugin.data.pretraining_dataset import seeded_generator
from d2v_plugin.masking import sample_block_mask

SIZE = 16  # corpus side in pixels: small keeps the tests fast
RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # tensors stay in [0, 1]


def _digests(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def half_mask(rows: int, patches: int, gen: torch.Generator) -> torch.Tensor:
    """A simple sampler (module level, so datasets holding it pickle)."""
    return torch.rand(rows, patches, generator=gen) < 0.5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    mic.make_corpus(out, size=SIZE, seed=1)
    return out


def test_corpus_layout_is_an_image_folder_split_per_class(corpus):
    _, labels = mic.load_digit_images()
    seen = set()
    for split in mic.SPLITS:
        assert sorted(p.name for p in (corpus / split).iterdir()) == [str(d) for d in range(10)]
        for cls in range(10):
            names = sorted((corpus / split / str(cls)).iterdir())
            ids = {int(p.stem) for p in names}
            assert all(labels[i] == cls for i in ids) and not ids & seen
            seen |= ids
            n = int((labels == cls).sum())
            expected = {"valid": round(n * mic.VALID_FRACTION), "test": round(n * mic.TEST_FRACTION)}
            expected["train"] = n - expected["valid"] - expected["test"]
            assert len(ids) == expected[split]
    assert seen == set(range(len(labels))) == set(range(1797))
    img = Image.open(next((corpus / "train" / "3").iterdir()))
    assert img.mode == "L" and img.size == (SIZE, SIZE)


def test_corpus_is_byte_identical_across_runs_and_reused_by_its_stamp(corpus, tmp_path):
    again = mic.make_corpus(tmp_path, size=SIZE, seed=1)
    assert not again["cached"] and _digests(tmp_path) == _digests(corpus)
    assert mic.make_corpus(tmp_path, size=SIZE, seed=1)["cached"]
    next((tmp_path / "valid" / "7").iterdir()).unlink()  # an incomplete corpus is rebuilt
    assert not mic.make_corpus(tmp_path, size=SIZE, seed=1)["cached"]
    assert _digests(tmp_path) == _digests(corpus)


def test_corpus_seed_changes_the_split_but_not_its_proportions():
    _, labels = mic.load_digit_images()
    a, b = mic.stratified_split(labels, 1), mic.stratified_split(labels, 2)
    assert a["valid"] != b["valid"]
    assert {s: len(v) for s, v in a.items()} == {s: len(v) for s, v in b.items()}


def test_corpus_cli_reports_the_splits(corpus, capsys):
    assert mic.main([str(corpus), "--size", str(SIZE)]) == 0
    out = capsys.readouterr().out
    assert "reused" in out and "train  1259 images in 10 classes" in out


def test_scan_sorts_classes_and_labels_by_folder(corpus):
    folder = scan_image_folder(str(corpus), "valid")
    assert folder.classes == tuple(str(d) for d in range(10)) and len(folder) == 269
    assert all(Path(p).parent.name == folder.classes[l] for p, l in zip(folder.paths, folder.labels))


def _save(path: Path, img: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def test_scan_errors_name_the_folder(tmp_path):
    with pytest.raises(ImageFileError, match="split folder not found"):
        scan_image_folder(str(tmp_path), "train")
    _save(tmp_path / "train" / "loose.png", Image.new("L", (4, 4)))
    with pytest.raises(ImageFileError, match=r"train: no images.*one sub-folder per class"):
        scan_image_folder(str(tmp_path), "train")
    _save(tmp_path / "train" / "b" / "x.png", Image.new("L", (4, 4)))
    (tmp_path / "train" / "b" / "notes.txt").write_text("skipped")
    with pytest.raises(ImageFileError, match=r"class folders \['b'\] are not among"):
        scan_image_folder(str(tmp_path), "train", classes=["a"])
    folder = scan_image_folder(str(tmp_path), "train", classes=["a", "b"])  # "a" absent here
    assert folder.labels.tolist() == [1] and folder.paths[0].endswith("x.png")


@pytest.fixture
def odd_images(tmp_path) -> Path:
    """One folder of images in the modes real corpora contain, 20x12 pixels each."""
    rgba = np.zeros((12, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[6:, :, 3] = 255  # top half fully transparent, bottom half opaque red
    grey = np.tile(np.linspace(0, 255, 20, dtype=np.uint8), (12, 1))
    d = tmp_path / "train" / "odd"
    _save(d / "grey.png", Image.fromarray(grey))
    _save(d / "grey16.png", Image.fromarray(grey.astype(np.uint16) * 257))
    _save(d / "rgba.png", Image.fromarray(rgba))
    _save(d / "la.png", Image.fromarray(np.stack([grey, rgba[..., 3]], -1), "LA"))
    _save(d / "palette.gif", Image.fromarray(rgba[..., :3]).convert("P"))
    _save(d / "bilevel.bmp", Image.fromarray(grey > 128))
    _save(d / "cmyk.jpg", Image.fromarray(rgba[..., :3]).convert("CMYK"))
    _save(d / "rgb.webp", Image.fromarray(rgba[..., :3]), lossless=True)
    return tmp_path


def test_every_mode_comes_out_as_a_3_channel_tensor(odd_images):
    ds = ImagePretrainingDataset(str(odd_images), "train", EvalTransform(8, crop_pct=1.0, **RAW),
                                 num_patches=4)
    assert len(ds) == 8
    for i in range(len(ds)):
        x = ds[i]["source"]
        assert x.shape == (3, 8, 8) and x.dtype == torch.float32, ds.folder.paths[i]
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_transparency_is_composited_on_the_background_and_16_bit_is_rescaled(odd_images):
    d = odd_images / "train" / "odd"
    white = np.asarray(load_rgb(str(d / "rgba.png")))
    assert white.shape == (12, 20, 3) and (white[0, 0] == 255).all() and white[-1, 0].tolist() == [200, 0, 0]
    assert (np.asarray(load_rgb(str(d / "rgba.png"), background=BLACK))[0, 0] == 0).all()
    assert np.array_equal(np.asarray(load_rgb(str(d / "grey16.png"))),
                          np.asarray(load_rgb(str(d / "grey.png"))))  # not clipped to white
    assert to_rgb(Image.new("P", (2, 2))).mode == "RGB"


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("lenient_global", [False, True])
def test_truncated_png_raises_image_file_error_naming_it(tmp_path, monkeypatch, lenient_global):
    # Some libraries set Pillow's global LOAD_TRUNCATED_IMAGES; we still refuse the file.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient_global)
    path = tmp_path / "train" / "a" / "cut.png"
    path.parent.mkdir(parents=True)
    data = _png_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageFileError, match=r"cut\.png: unreadable or truncated") as err:
        load_rgb(str(path))
    assert str(path) in str(err.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is lenient_global  # restored
    ds = ImagePretrainingDataset(str(tmp_path), "train", EvalTransform(8, **RAW), num_patches=4)
    with pytest.raises(ImageFileError, match=str(path)):
        ds[0]


def test_non_image_and_missing_files_raise_image_file_error(tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    with pytest.raises(ImageFileError, match=rf"{fake}: not an image"):
        load_rgb(str(fake))
    with pytest.raises(ImageFileError, match="gone.png: file not found"):
        load_rgb(str(tmp_path / "gone.png"))
    assert issubclass(ImageFileError, ValueError)


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))  # 50 wide, 30 high


def test_random_resized_crop_has_the_requested_shape_and_is_reproducible(photo):
    aug = PretrainingAugmentation(input_size=24, scale=(0.2, 1.0))
    a = aug(photo, torch.Generator().manual_seed(5))
    assert a.shape == (3, 24, 24) and a.dtype == torch.float32
    assert torch.equal(a, aug(photo, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, aug(photo, torch.Generator().manual_seed(6)))
    for seed in range(50):
        left, top, w, h = random_resized_crop_box(50, 30, (0.2, 1.0), (3 / 4, 4 / 3),
                                                  torch.Generator().manual_seed(seed))
        assert 0 <= left and left + w <= 50 and 0 <= top and top + h <= 30
        assert 0.19 * 1500 <= w * h <= 1500 and 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1


def test_flip_is_the_only_difference_between_hflip_probabilities_one_and_zero(photo):
    flip, keep = (PretrainingAugmentation(16, hflip_prob=p, **RAW) for p in (1.0, 0.0))
    assert torch.equal(flip(photo, torch.Generator().manual_seed(1)),
                       keep(photo, torch.Generator().manual_seed(1)).flip(-1))


def test_eval_transform_resizes_and_centre_crops(photo):
    x = EvalTransform(input_size=16, **RAW)(photo)  # shorter side 30 -> 18, crop 16
    assert x.shape == (3, 16, 16)
    assert torch.equal(x, EvalTransform(input_size=16, **RAW)(photo))
    with pytest.raises(ValueError, match="scale"):
        PretrainingAugmentation(scale=(0.0, 1.0))


def _dataset(corpus, split="valid", clone_batch=1, mask_sampler=None, **kw) -> ImagePretrainingDataset:
    aug = PretrainingAugmentation(input_size=SIZE, scale=(0.2, 1.0), hflip_prob=0.0)
    expander = BatchExpander(clone_batch, mask_sampler) if mask_sampler is not None else None
    return ImagePretrainingDataset(str(corpus), split, aug, num_patches=16, expander=expander, **kw)


def test_items_are_reproducible_from_seed_epoch_and_index(corpus):
    ds = _dataset(corpus)
    item = ds[5]
    assert item["source"].shape == (3, SIZE, SIZE) and item["label"] == ds.folder.labels[5]
    assert torch.equal(item["source"], _dataset(corpus)[5]["source"])
    ds.set_epoch(2)
    assert not torch.equal(item["source"], ds[5]["source"])
    assert not torch.equal(item["source"], _dataset(corpus, seed=2)[5]["source"])


def test_collater_stacks_images_and_adds_m_masks_per_image(corpus):
    ds = _dataset(corpus, clone_batch=4, mask_sampler=half_mask)
    samples = [ds[i] for i in (3, 1, 4)]
    batch = ds.collater(samples)
    assert batch["id"].tolist() == [3, 1, 4] and batch["id"].dtype == torch.long
    assert batch["net_input"]["source"].shape == (3, 3, SIZE, SIZE)
    assert batch["label"].tolist() == [int(ds.folder.labels[i]) for i in (3, 1, 4)]
    assert batch["nsentences"] == 3 and batch["ntokens"] == 3 * 16
    mask = batch["net_input"]["precomputed_mask"]
    assert mask.shape == (12, 16) and mask.dtype == torch.bool
    expected = half_mask(12, 16, seeded_generator(ds.seed, ds.epoch, 3, 1, 4))
    assert torch.equal(mask, expected)
    assert "precomputed_mask" not in _dataset(corpus).collater(samples)["net_input"]
    assert ds.collater([]) == {}


def _block_sampler(rows: int, patches: int, gen: torch.Generator) -> torch.Tensor:
    return sample_block_mask(rows, patches, 0.8, 3, 0.07, inverse=True, generator=gen)


def test_collater_works_with_a_block_sampler_and_rejects_bad_masks(corpus):
    ds = _dataset(corpus, clone_batch=2, mask_sampler=_block_sampler)
    mask = ds.collater([ds[0], ds[1]])["net_input"]["precomputed_mask"]
    assert mask.shape == (4, 16) and (mask.sum(1) == mask.sum(1)[0]).all()
    bad = _dataset(corpus, clone_batch=2,
                   mask_sampler=lambda rows, patches, gen: torch.zeros(rows, patches + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected torch.bool \(4, 16\)"):
        bad.collater([bad[0], bad[1]])


def test_dataset_batches_through_fairseq_epoch_iterator(corpus):
    ds = _dataset(corpus, clone_batch=2, mask_sampler=half_mask)
    indices = ds.ordered_indices()
    assert sorted(indices.tolist()) == list(range(len(ds)))
    assert not np.array_equal(indices, np.arange(len(ds)))  # shuffled by (seed, epoch)
    batches = ds.batch_by_size(indices, max_sentences=32)
    assert max(len(b) for b in batches) == 32
    assert [len(b) for b in ds.batch_by_size(indices, max_tokens=8 * 16)][:2] == [8, 8]
    epoch_itr = iterators.EpochBatchIterator(ds, ds.collater, batches, seed=1, epoch=1)
    seen = []
    for batch in epoch_itr.next_epoch_itr(shuffle=True):
        b = len(batch["id"])
        assert batch["net_input"]["source"].shape == (b, 3, SIZE, SIZE)
        assert batch["net_input"]["precomputed_mask"].shape == (2 * b, 16)
        seen += batch["id"].tolist()
    assert sorted(seen) == list(range(len(ds)))
    epoch_itr.next_epoch_itr(shuffle=True)
    assert ds.epoch == 2 and not ds.can_reuse_epoch_itr_across_epochs
    assert not np.array_equal(ds.ordered_indices(), indices)


def test_dataset_pickles_and_runs_in_a_loader_worker(corpus):
    ds = _dataset(corpus, clone_batch=2, mask_sampler=half_mask)
    assert pickle.loads(pickle.dumps(ds)).folder.paths == ds.folder.paths  # spawn-safe
    loader = torch.utils.data.DataLoader(ds, batch_sampler=[[0, 1, 2]], num_workers=1,
                                         collate_fn=ds.collater)
    (batch,) = list(loader)
    in_process = ds.collater([ds[i] for i in (0, 1, 2)])
    assert torch.equal(batch["net_input"]["source"], in_process["net_input"]["source"])
    assert torch.equal(batch["net_input"]["precomputed_mask"], in_process["net_input"]["precomputed_mask"])
