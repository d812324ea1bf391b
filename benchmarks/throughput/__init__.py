"""The CPU pretraining-throughput benchmark behind ``benchmarks/pretraining_throughput.py``, one
job per module: ``configs`` (config specs and per-size flags), ``step`` (the training step as
fairseq builds it), ``worker`` (one process per config), ``measure`` (interleaved timed updates,
FLOPs, the matmul reference), ``breakdown`` (the torch.profiler attribution), ``report``
(tables, ratios, MFU)."""
