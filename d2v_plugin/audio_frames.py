"""Audio frame geometry: how the conv feature encoder turns waveform samples into frames.

The feature encoder spec (``model.modalities.audio.feature_encoder_spec``) is parsed once,
by the audio encoder when the model is built (``AudioEncoder.conv_spec``); the pretraining
task, the dataset (which skips utterances shorter than the receptive field and sizes the
masks by frame count) and the feature extractor read it from there or call these functions.
"""
from __future__ import annotations

import ast
from typing import List, Tuple

import torch

ConvSpec = List[Tuple[int, int, int]]


def parse_conv_spec(spec: str) -> ConvSpec:
    """Parse a feature-encoder spec such as ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``.

    The reference configs write the spec as a Python expression; we evaluate only list /
    tuple / integer literals combined with ``+`` and ``*`` so a config can't run code.
    """
    allowed = (ast.Expression, ast.List, ast.Tuple, ast.Constant, ast.BinOp, ast.Add,
               ast.Mult, ast.Load)
    tree = ast.parse(spec, mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            raise ValueError(f"feature_encoder_spec may only hold lists of (dim, kernel, stride) "
                             f"tuples joined by + and *, got {spec!r}")
    layers = eval(compile(tree, "<feature_encoder_spec>", "eval"), {"__builtins__": {}})
    if not layers or any(len(layer) != 3 for layer in layers):
        raise ValueError(f"feature_encoder_spec must be a non-empty list of (dim, kernel, stride): {spec!r}")
    return [tuple(int(v) for v in layer) for layer in layers]


def receptive_field(conv_spec: ConvSpec) -> int:
    """Number of input samples the feature encoder needs to emit one frame."""
    field, jump = 1, 1
    for _, kernel, stride in conv_spec:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def feature_lengths(num_samples: torch.Tensor | int, conv_spec: ConvSpec):
    """Frames produced by the conv feature encoder for ``num_samples`` input samples."""
    lengths = torch.as_tensor(num_samples, dtype=torch.long)
    for _, kernel, stride in conv_spec:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp_min(0)
