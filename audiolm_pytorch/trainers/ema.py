"""Exponential moving average of a model's weights, as kept by every trainer with ``use_ema=True``."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's weights (Polyak averaging).

    Defaults follow the established SoundStream trainer: for the first ``update_after_step`` updates the EMA
    copy simply tracks the online weights; afterwards, every ``update_every`` updates,
    ``ema = beta * ema + (1 - beta) * online`` for floating-point parameters and buffers (others are copied).
    The averaged copy has exactly the online model's state-dict keys.
    """

    def __init__(self, model: nn.Module, *, beta: float = 0.995, update_after_step: int = 500, update_every: int = 10):
        if not 0. <= beta < 1.:
            raise ValueError(f'ema_beta must be in [0, 1), got {beta}')
        self.beta, self.update_after_step, self.update_every = beta, update_after_step, max(1, update_every)
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.step = 0

    @torch.no_grad()
    def update(self, model: nn.Module):
        self.step += 1
        online = model.state_dict()
        target = self.ema_model.state_dict()
        copy_only = self.step <= self.update_after_step
        if not copy_only and self.step % self.update_every != 0:
            return
        for key, value in online.items():
            ema_value = target[key]
            if copy_only or not ema_value.is_floating_point():
                ema_value.copy_(value)
            else:
                ema_value.lerp_(value.to(ema_value.dtype), 1. - self.beta)
