"""A distributed all-gather that keeps the gradient (MuLaN's contrastive losses see every process's batch)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = ['all_gather_with_grad', 'distributed_ready']



def distributed_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate ``(n_rank, d)`` shards of every process along dim 0 (sizes may differ). Backward sums the
    gradient of the gathered tensor over processes and returns this process's slice, so each shard receives
    the gradient of every process's loss (every rank computes the same full-batch loss)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        world = dist.get_world_size()
        size = torch.tensor([x.shape[0]], device = x.device, dtype = torch.long)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        sizes = [int(s.item()) for s in sizes]
        longest = max(sizes)
        padded = F.pad(x, (0, 0, 0, longest - x.shape[0])).contiguous()
        gathered = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded)
        rank = dist.get_rank()
        ctx.local_slice = (sum(sizes[:rank]), sum(sizes[:rank + 1]))
        return torch.cat([shard[:n] for shard, n in zip(gathered, sizes)], dim = 0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op = dist.ReduceOp.SUM)
        start, end = ctx.local_slice
        return grad[start:end]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """``(n_local, d)`` -> ``(n_total, d)`` across processes (identity when not distributed)."""
    if not distributed_ready():
        return x
    return _AllGatherWithGrad.apply(x)
