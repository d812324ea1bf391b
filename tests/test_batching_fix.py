"""Every sample reaches a batch: the installed fairseq's ``batch_by_size`` drops the tail when
``required_batch_size_multiple`` > 1 (d2v_plugin/batching_fix.py); with the plugin imported,
fairseq's own batching returns each index exactly once, in fairseq's batches plus the tail."""
import numpy as np
import pytest

import d2v_plugin  # noqa: F401  (installs the fix)
from d2v_plugin.batching_fix import complete_batches
from fairseq.data import data_utils

CASES = [  # (samples, max_sentences, max_tokens, required multiple)
    (174, 64, None, 8), (174, 200, None, 8), (13, 16, None, 8), (5, 16, None, 8), (100, None, 400_000, 8),
    (174, None, 400_000, 8), (7, None, 400_000, 8), (64, 16, None, 8), (50, 16, None, 1),
]


@pytest.mark.parametrize("n, max_sentences, max_tokens, multiple", CASES)
def test_fairseq_batching_keeps_every_sample(n, max_sentences, max_tokens, multiple):
    sizes = np.sort(np.random.RandomState(n).randint(5_000, 60_000, size=n)).astype(np.int64)
    batches = data_utils.batch_by_size(np.arange(n, dtype=np.int64), lambda i: sizes[i], num_tokens_vec=sizes,
                                       max_tokens=max_tokens, max_sentences=max_sentences,
                                       required_batch_size_multiple=multiple)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(n))
    for b in batches:
        assert max_sentences is None or len(b) <= max_sentences
        assert max_tokens is None or len(b) * sizes[b].max() <= max_tokens


def test_the_full_batches_are_fairseqs_and_the_tail_comes_last():
    """Only the left-out samples are added: fairseq's own batches stay as they were."""
    def drops_the_tail(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None, max_sentences=None,
                       required_batch_size_multiple=1, fixed_shapes=None):
        whole = len(indices) - len(indices) % required_batch_size_multiple
        return [indices[i:i + max_sentences] for i in range(0, whole, max_sentences)]

    fixed = complete_batches(drops_the_tail)
    batches = fixed(np.arange(21), len, max_sentences=8, required_batch_size_multiple=8)
    assert [b.tolist() for b in batches] == [list(range(8)), list(range(8, 16)), list(range(16, 21))]
    assert [b.tolist() for b in fixed(np.arange(16), len, max_sentences=8, required_batch_size_multiple=8)] == \
        [list(range(8)), list(range(8, 16))]


def test_a_task_iterator_yields_every_validation_sample():
    """Through FairseqDataset.batch_by_size / the epoch iterator, as validation runs."""
    from fairseq.data import FairseqDataset
    from fairseq.data.iterators import EpochBatchIterator

    class Sentences(FairseqDataset):
        sizes = np.full(13, 10, dtype=np.int64)

        def __getitem__(self, index):
            return int(index)

        def __len__(self):
            return len(self.sizes)

        def num_tokens(self, index):
            return 10

        def size(self, index):
            return 10

        def collater(self, samples):
            return samples

    data = Sentences()
    batches = data.batch_by_size(np.arange(13, dtype=np.int64), max_sentences=4, required_batch_size_multiple=8)
    seen = [x for batch in EpochBatchIterator(data, data.collater, batches).next_epoch_itr(shuffle=False) for x in batch]
    assert sorted(seen) == list(range(13))
