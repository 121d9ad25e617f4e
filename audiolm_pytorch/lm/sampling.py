"""Sampling and token-sequence helpers: top-k / temperature sampling, EOS handling, unique-consecutive,
forgetful causal masking."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn



# Sampling defaults of the AudioLM pipeline per stage (``AudioLM.forward`` uses them when its ``temperature`` /
# ``filter_thres`` / ``cond_scale`` are left at None). Sources:
# - temperature 1.0 / 0.95 / 0.4 (semantic / coarse / fine): MusicLM (Agostinelli et al., arXiv 2301.11325, §4
#   "Models"): temperature sampling in every stage, 1.0 for semantic modeling, 0.95 and 0.4 for the coarse and
#   fine acoustic stages, picked there by listening for a trade-off between diversity and temporal consistency.
#   AudioLM (arXiv 2209.03143) gives no per-stage values; the low fine temperature matters most, as the fine
#   levels add detail, not content, and noise there is heard as hiss.
# - filter_thres 0.9 (keep the top 10% of the vocabulary): audiolm-pytorch 2.4.0's default for every stage. The
#   papers describe untruncated temperature sampling (filter_thres=0); the truncation is kept because small models
#   trained briefly put noticeable mass on unlikely ids.
# - cond_scale 3.0 (classifier-free guidance, only with text / MuLaN conditioning): audiolm-pytorch 2.4.0's
#   default, the guidance scale MusicGen uses (Copet et al., arXiv 2306.05284). AudioLM and MusicLM use no guidance.
STAGE_SAMPLING_DEFAULTS = {
    'semantic': dict(temperature = 1.0, filter_thres = 0.9, cond_scale = 3.0),
    'coarse': dict(temperature = 0.95, filter_thres = 0.9, cond_scale = 3.0),
    'fine': dict(temperature = 0.4, filter_thres = 0.9, cond_scale = 3.0),
}


def stage_sampling(temperature = None, filter_thres = None, cond_scale = None) -> dict:
    """``{stage: {temperature, filter_thres, cond_scale}}`` for the semantic, coarse and fine stages. Each argument is
    None (every stage's default, ``STAGE_SAMPLING_DEFAULTS``), one number for all stages, or a
    ``(semantic, coarse, fine)`` triple."""
    stages = tuple(STAGE_SAMPLING_DEFAULTS)
    out = {stage: dict(values) for stage, values in STAGE_SAMPLING_DEFAULTS.items()}
    for name, value in (('temperature', temperature), ('filter_thres', filter_thres), ('cond_scale', cond_scale)):
        if value is None:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,) * len(stages)
        if not isinstance(value, (tuple, list)) or len(value) != len(stages) or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f'{name} must be None (each stage\'s default), a number, or one number per stage '
                             f'(semantic, coarse, fine), got {value!r}')
        for stage, v in zip(stages, value):
            out[stage][name] = float(v)
    return out


# Initial probability of EOS at every position of an untrained stage. EOS is at most one target per sequence (none
# at all for crops that do not end their file), so it starts rare instead of at 1 / vocabulary — the
# prior-probability initialisation of rare classes (Lin et al., focal loss, arXiv 1708.02002 §4.1). An untrained or
# briefly trained model then does not end its generations at random; the bias is trained like any other.
EOS_PRIOR = 1e-3


@torch.no_grad()
def init_eos_bias(bias: Tensor, eos_id: int, num_tokens: int, prior: float = EOS_PRIOR):
    """Set ``bias[..., eos_id]`` so that, with the other biases near zero, EOS starts with probability ~``prior``
    among ``num_tokens`` other ids."""
    bias[..., eos_id] = math.log(prior * num_tokens / (1. - prior))


def top_k_filter(logits: Tensor, filter_thres: float = 0.9) -> Tensor:
    """Keep the top ``ceil((1 - filter_thres) * vocab)`` logits (at least one), set the rest to -inf
    (``filter_thres <= 0`` keeps all). The stage transformers and SoundStorm share it."""
    vocab = logits.shape[-1]
    k = max(1, min(vocab, math.ceil((1. - filter_thres) * vocab)))
    if k >= vocab:
        return logits
    values, _ = logits.topk(k, dim = -1)
    return logits.masked_fill(logits < values[..., -1:], float('-inf'))


def gumbel_noise(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise ``-log(-log(u))`` of ``like``'s shape and device (float32), ``u ~ U(0, 1)`` kept in
    ``[1e-20, 1 - 1e-7]`` so that the noise stays finite. The stage transformers and SoundStorm share it."""
    uniform = torch.rand(like.shape, device = like.device, dtype = torch.float32, generator = generator)
    return -torch.log(-torch.log(uniform.clamp(1e-20, 1. - 1e-7)))


def sample_logits(logits: Tensor, *, filter_thres: float = 0.9, temperature: float = 1.,
                  generator: torch.Generator | None = None) -> Tensor:
    """Sample ids ``(...)`` from ``logits (..., vocab)``; ``temperature <= 0`` is greedy."""
    if temperature <= 0.:
        return logits.argmax(dim = -1)
    logits = top_k_filter(logits.float(), filter_thres) / temperature
    return (logits + gumbel_noise(logits, generator)).argmax(dim = -1)


def batch_unique_consecutive(ids: Tensor, pad_id: int = -1) -> Tensor:
    """Collapse runs of repeated ids per row (ignoring padding), right-pad with ``pad_id``.

    Args:
        ids: ``(b, n)``. Returns ``(b, n')`` with ``n' <= n``.
    """
    rows = [torch.unique_consecutive(row[row != pad_id]) for row in ids]
    return nn.utils.rnn.pad_sequence(rows, batch_first = True, padding_value = pad_id) if rows else ids


def lengths_from_padding(ids: Tensor, pad_id: int = -1) -> Tensor:
    """Number of leading non-pad entries per row of ``ids (b, n, ...)``: a row ends at its first pad."""
    if ids.shape[1] == 0:
        return torch.zeros(ids.shape[0], dtype = torch.long, device = ids.device)
    is_pad = ids == pad_id
    if is_pad.ndim > 2:
        is_pad = is_pad.flatten(2).all(dim = -1)
    any_pad = is_pad.any(dim = 1)
    first_pad = is_pad.int().argmax(dim = 1)
    return torch.where(any_pad, first_pad, torch.full_like(first_pad, ids.shape[1]))


def append_eos(ids: Tensor, eos_id: int, pad_id: int = -1, where: Tensor | None = None) -> Tensor:
    """Put ``eos_id`` at each row's end (its first pad position, or a new last position).

    Args:
        ids: ``(b, n)``, right-padded with ``pad_id``. Returns ``(b, n + 1)``.
        where: optional ``(b,)`` bool: rows where it is False get ``pad_id`` there instead of EOS.
    """
    lengths = lengths_from_padding(ids, pad_id)
    ids = F.pad(ids, (0, 1), value = pad_id)
    if where is None:
        return ids.scatter(1, lengths[:, None], eos_id)
    value = torch.where(where.to(ids.device).bool(), eos_id, pad_id)[:, None].to(ids.dtype)
    return ids.scatter(1, lengths[:, None], value)


def file_end_mask(file_end, batch: int, device) -> Tensor:
    """Normalize a stage's ``file_end`` argument to a ``(batch,)`` bool tensor.

    ``file_end`` is True where a training sequence ends at the real end of its audio file (EOS is then a
    target after its last real token), False where it is a crop that the file goes on after (no EOS target).
    ``None`` means True for every row (whole sequences). A bool applies to the whole batch.
    """
    if file_end is None or isinstance(file_end, bool):
        return torch.full((batch,), True if file_end is None else file_end, dtype = torch.bool, device = device)
    if not torch.is_tensor(file_end):
        raise ValueError(f'file_end must be a bool, a (b,) bool tensor or None, got {type(file_end).__name__}')
    if file_end.ndim == 0:
        file_end = file_end.expand(batch)
    if file_end.shape != (batch,):
        raise ValueError(f'file_end must be one flag per sequence, shape ({batch},), got {tuple(file_end.shape)}')
    if file_end.is_floating_point() or file_end.is_complex() or \
            (file_end.dtype != torch.bool and bool(((file_end != 0) & (file_end != 1)).any())):
        raise ValueError(f'file_end must hold booleans (True = the sequence ends at its file\'s end), got '
                         f'dtype {file_end.dtype}')
    return file_end.to(device = device, dtype = torch.bool)


def mask_after_eos(ids: Tensor, eos_id: int, pad_id: int = -1, include_eos: bool = True) -> Tensor:
    """Replace everything after the first ``eos_id`` in each row (and the EOS itself when ``include_eos``)
    with ``pad_id``. ``ids``: ``(b, n)``."""
    is_eos = ids == eos_id
    after = (is_eos.cumsum(dim = 1) - (0 if include_eos else is_eos.int())) > 0
    return ids.masked_fill(after, pad_id)


def forgetful_causal_mask(shape: tuple[int, int], prob: float, device) -> Tensor:
    """Forgetful causal masking (Liu et al., arXiv 2210.13432): a key keep-mask ``(b, n)`` that hides about
    ``prob`` of the positions of each row except the first, so the model cannot lean on its immediate past."""
    batch, seq_len = shape
    keep = torch.rand(batch, seq_len, device = device) >= prob
    keep[:, 0] = True
    return keep


