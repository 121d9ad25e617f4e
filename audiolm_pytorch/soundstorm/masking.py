"""SoundStorm's masking: the schedules (fraction of tokens still masked at time ``t``) and the training inputs of
the paper's masking scheme (Borsos et al., arXiv 2305.09636, §3.2).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from audiolm_pytorch.utils import exists

# masking schedules: fraction of tokens still masked at time t in [0, 1] (1 at t = 0, 0 at t = 1)

def cosine_schedule(t: Tensor) -> Tensor:
    return torch.cos(t * math.pi / 2)


def linear_schedule(t: Tensor) -> Tensor:
    return 1. - t


SCHEDULES: dict[str, Callable[[Tensor], Tensor]] = dict(cosine = cosine_schedule, linear = linear_schedule)


def training_inputs(levels: Tensor, mask: Tensor, *, schedule: Callable[[Tensor], Tensor], mask_id: int,
                    codebook_size: int, no_replace_prob: float = 0., random_token_prob: float = 0.,
                    corrupt: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The masked input of one training step (paper §3.2).

    Args:
        levels: codes ``(b, n, g, q)``. mask: ``(b, n)`` bool, True = real frame (at least one per row).
        schedule: masking schedule (``SCHEDULES``). mask_id: the mask token. codebook_size: codes per codebook.
        no_replace_prob / random_token_prob / corrupt: BERT-style corruption (only with ``corrupt=True``, in
            training): in half of the calls that fraction of the masked tokens keeps its true code, in half (of
            the rest) gets a random code instead of the mask token.

    A prompt of ``t ~ U{0, ..., T - 1}`` real frames stays visible; one residual level per sample is chosen and
    its tokens after the prompt are masked with probability ``schedule(u)`` (at least one per sample); finer
    levels are masked entirely, padded frames everywhere.

    Returns ``(inputs (b, n, g·q), token_mask (b, n, g), level (b,))``: ``token_mask`` marks the loss targets
    (tokens of ``level`` masked or corrupted).
    """
    b, n, g, q = levels.shape
    device = levels.device

    # prompt: the first t real frames stay visible, t ~ U{0, ..., T - 1}
    num_real = mask.sum(dim = -1)
    rank = mask.long().cumsum(dim = -1) - 1
    prompt_len = (torch.rand(b, device = device) * num_real).floor()
    target = mask & (rank >= prompt_len[:, None])                                   # (b, n) frames to predict

    # level and mask ratio per sample; mask tokens of that level with prob schedule(u)
    level = torch.randint(0, q, (b,), device = device)
    mask_prob = schedule(torch.rand(b, device = device))
    token_mask = (torch.rand(b, n, g, device = device) < mask_prob[:, None, None]) & target[..., None]
    # at least one masked token per sample so every sample contributes to the loss
    forced = (torch.rand(b, n, device = device) * target).argmax(dim = -1)
    force = F.one_hot(forced, n).bool() & target & ~token_mask.any(dim = -1).any(dim = -1, keepdim = True)
    token_mask = token_mask | force[..., None]

    level_index = torch.arange(q, device = device)
    is_level = level_index == level[:, None, None, None]                            # (b, 1, 1, q)
    above = (level_index > level[:, None, None, None]) & target[..., None, None]     # finer levels: all masked
    # BERT-style corruption (reference no_replace_prob / random_token_prob), each in half of the batches
    replace = token_mask
    random_tokens = None
    if corrupt and no_replace_prob > 0. and torch.rand((), device = 'cpu').item() < 0.5:
        replace = replace & ~(torch.rand(replace.shape, device = device) < no_replace_prob)
    if corrupt and random_token_prob > 0. and torch.rand((), device = 'cpu').item() < 0.5:
        random_tokens = replace & (torch.rand(replace.shape, device = device) < random_token_prob)
        replace = replace & ~random_tokens
    masked = above | (is_level & replace[..., None]) | ~mask[..., None, None]
    inputs = levels.masked_fill(masked, mask_id)
    if exists(random_tokens):
        noise = torch.randint(0, codebook_size, inputs.shape, device = device)
        inputs = torch.where(is_level & random_tokens[..., None] & ~masked, noise, inputs)
    return rearrange(inputs, 'b n g q -> b n (g q)'), token_mask, level
