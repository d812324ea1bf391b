"""Contextualised targets: the teacher's top-K layers, each normalised, averaged."""
from typing import List, Sequence

import torch
import torch.nn.functional as F


def instance_norm_over_time(x: torch.Tensor) -> torch.Tensor:
    """Normalise each channel of each sample over time: (B, T, C) -> (B, T, C), float32."""
    return F.instance_norm(x.float().transpose(1, 2)).transpose(1, 2)


def average_top_k(layer_outputs: Sequence[torch.Tensor], top_k: int, instance_norm_layer: bool = True,
                  layer_norm_layer: bool = False, layer_norm_result: bool = False,
                  instance_norm_result: bool = False) -> torch.Tensor:
    """Average the last ``top_k`` of ``layer_outputs`` (each (B, T, C)) after normalising each."""
    if top_k > len(layer_outputs):
        raise ValueError(f"average_top_k_layers={top_k} but the teacher has {len(layer_outputs)} blocks")
    layers: List[torch.Tensor] = [y.float() for y in layer_outputs[-top_k:]]
    if instance_norm_layer:
        layers = [instance_norm_over_time(y) for y in layers]
    if layer_norm_layer:
        layers = [F.layer_norm(y, y.shape[-1:]) for y in layers]
    target = torch.stack(layers).mean(0)
    if layer_norm_result:
        target = F.layer_norm(target, target.shape[-1:])
    if instance_norm_result:
        target = instance_norm_over_time(target)
    return target
