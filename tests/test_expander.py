"""The multi-mask batch expander: masks made in the data loader, M rows per sample."""
import pytest
import torch

from d2v_plugin.audio_frames import feature_lengths, parse_conv_spec
from d2v_plugin.data.audio_dataset import AudioPretrainingDataset
from d2v_plugin.data.expander import BatchExpander, expand_rows
from d2v_plugin.data.pretraining_dataset import seeded_generator
from d2v_plugin.masking import BlockMaskSampler, sample_block_mask

SPEC = parse_conv_spec("[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64,2,2)] + [(64,2,2)]")


def dataset(corpus, clone_batch=4):
    return AudioPretrainingDataset(str(corpus / "train.tsv"), SPEC, min_sample_size=16000, max_sample_size=48000,
                                   expander=BatchExpander(clone_batch, BlockMaskSampler(0.5, 5, 0.05)))


def test_expander_gives_m_rows_per_sample_with_equal_keep_counts(speech_corpus):
    ds = dataset(speech_corpus)
    batch = ds.collater([ds[i] for i in range(5)])
    source, mask = batch["net_input"]["source"], batch["net_input"]["precomputed_mask"]
    assert source.shape[0] == 5 and mask.shape == (20, int(feature_lengths(source.shape[1], SPEC)))
    assert (mask.sum(1) == mask.sum(1)[0]).all()
    views = mask.view(5, 4, -1)
    assert all(not torch.equal(views[b, 0], views[b, 1]) for b in range(5))  # M different masks


def test_expander_masks_are_reproducible_per_epoch_and_change_across_epochs(speech_corpus):
    ds = dataset(speech_corpus)
    samples = [ds[i] for i in range(3)]
    first = ds.collater(samples)["net_input"]["precomputed_mask"]
    assert torch.equal(first, ds.collater(samples)["net_input"]["precomputed_mask"])
    ds.set_epoch(2)
    assert not torch.equal(first, ds.collater(samples)["net_input"]["precomputed_mask"])


def test_expander_runs_inside_data_loader_workers(speech_corpus):
    ds = dataset(speech_corpus)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=[[0, 1], [2, 3, 4]], num_workers=2,
                                         collate_fn=ds.collater)
    batches = list(loader)
    assert [b["net_input"]["precomputed_mask"].shape[0] for b in batches] == [8, 12]
    in_process = ds.collater([ds[i] for i in (2, 3, 4)])["net_input"]["precomputed_mask"]
    assert torch.equal(batches[1]["net_input"]["precomputed_mask"], in_process)


def test_expander_masks_are_the_samplers_for_batch_times_m_rows_and_refuse_bad_shapes():
    expander = BatchExpander(3, BlockMaskSampler(0.5, 5, 0.05))
    mask = expander.masks(2, 49, seeded_generator(1, 1, 7, 8))
    assert torch.equal(mask, sample_block_mask(6, 49, 0.5, 5, 0.05, generator=seeded_generator(1, 1, 7, 8)))
    bad = BatchExpander(2, lambda rows, length, gen: torch.zeros(rows, length + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask_sampler must return a \(4, 10\) bool mask"):
        bad.masks(2, 10, None)
    with pytest.raises(ValueError, match="clone_batch must be >= 1"):
        BatchExpander(0, BlockMaskSampler(0.5, 5))


def test_expand_rows_puts_sample_b_on_the_rows_its_masks_own():
    x = torch.arange(6.0).view(2, 3)
    rows = expand_rows(x, 3)
    assert rows.shape == (6, 3)
    assert all(torch.equal(rows[b * 3 + m], x[b]) for b in range(2) for m in range(3))
    assert expand_rows(None, 3) is None and expand_rows(x, 1) is x
