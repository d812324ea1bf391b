"""Put back the samples that the installed fairseq's batching drops.

Measured with ve-fairseq 0.12.3 (numpy 2.4): ``fairseq.data.data_utils.batch_by_size`` with
``required_batch_size_multiple`` > 1 (fairseq's default is 8) silently leaves out the last
``len(indices) mod multiple`` samples (fewer with ``max_tokens``): 174 test sentences with
``--batch-size 64`` become 64 + 64 + 40 = 168, and a valid set of 5 utterances becomes none.
fairseq's source (``data_utils_fast.pyx``) ends with the tail as one more batch; the compiled
module of that wheel does not. Every trainer epoch, validation and ``fairseq-validate`` run
goes through this function, so the plugin wraps it: batches are what fairseq made, plus the
samples it left out, batched again without the multiple constraint (order kept). With a
build that keeps every sample the wrapper changes nothing.
"""
from __future__ import annotations

import functools
import logging

import numpy as np

logger = logging.getLogger(__name__)

_WRAPPED = "_d2v_keeps_every_sample"


def complete_batches(batch_by_size):
    """``batch_by_size`` that returns every index it was given, each exactly once."""

    @functools.wraps(batch_by_size)
    def wrapper(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None, max_sentences=None,
                required_batch_size_multiple=1, fixed_shapes=None):
        batches = batch_by_size(indices, num_tokens_fn, num_tokens_vec=num_tokens_vec,
                                max_tokens=max_tokens, max_sentences=max_sentences,
                                required_batch_size_multiple=required_batch_size_multiple,
                                fixed_shapes=fixed_shapes)
        if fixed_shapes is not None or required_batch_size_multiple <= 1:
            return batches
        indices = np.asarray(indices, dtype=np.int64)
        batched = np.concatenate(batches) if len(batches) else np.zeros(0, dtype=np.int64)
        if len(batched) == len(indices):
            return batches
        left_out = ~np.isin(indices, batched)
        tail = indices[left_out]
        tail_tokens = None if num_tokens_vec is None else np.asarray(num_tokens_vec)[left_out]
        logger.debug("batch_by_size left out %d of %d samples; they form extra batches",
                     len(tail), len(indices))
        return list(batches) + list(batch_by_size(tail, num_tokens_fn, num_tokens_vec=tail_tokens,
                                                  max_tokens=max_tokens, max_sentences=max_sentences))

    setattr(wrapper, _WRAPPED, True)
    return wrapper


def keep_every_sample() -> None:
    """Install the wrapper in ``fairseq.data.data_utils`` (idempotent)."""
    from fairseq.data import data_utils

    if not getattr(data_utils.batch_by_size, _WRAPPED, False):
        data_utils.batch_by_size = complete_batches(data_utils.batch_by_size)
