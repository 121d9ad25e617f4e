"""Lion optimizer (Chen et al., arXiv 2302.06675): sign of an interpolated momentum, decoupled weight decay."""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class Lion(Optimizer):
    """``update = sign(beta1 * m + (1 - beta1) * g)``; ``p -= lr * (update + weight_decay * p)``;
    ``m = beta2 * m + (1 - beta2) * g``. Use a learning rate 3-10x smaller than AdamW's."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.):
        if lr <= 0. or not all(0. <= b < 1. for b in betas):
            raise ValueError(f'Lion needs lr > 0 and betas in [0, 1), got lr={lr}, betas={betas}')
        super().__init__(params, dict(lr = lr, betas = tuple(betas), weight_decay = weight_decay))

    @torch.no_grad()
    def step(self, closure = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group['betas']
            for p in group['params']:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state['exp_avg'] = torch.zeros_like(p)
                exp_avg = state['exp_avg']
                p.mul_(1. - group['lr'] * group['weight_decay'])
                p.add_(exp_avg.mul(beta1).add(p.grad, alpha = 1. - beta1).sign_(), alpha = -group['lr'])
                exp_avg.mul_(beta2).add_(p.grad, alpha = 1. - beta2)
        return loss
