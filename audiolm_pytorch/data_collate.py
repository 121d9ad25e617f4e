"""Batch collation of dataset items (a tensor or a tuple of fields each): pad to the longest item
(``collate_pad``) or crop to the shortest (``collate_crop``), and ``get_dataloader`` that uses them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from audiolm_pytorch.utils import beartype

__all__ = ['PAD_ID', 'collate_pad', 'collate_crop', 'get_dataloader']


PAD_ID = -1   # what collate_pad writes after the end of integer items (token ids, codes): never a real id


def _stack_padded(tensors: Sequence[Tensor]) -> Tensor:
    """Audio ``(n,)`` / ``(c, n)``: zeros after the end of the last axis. Token ids ``(n,)`` and codes ``(n, q)``:
    ``PAD_ID`` after the end of the first (time) axis. Boolean masks ``(n,)``: False."""
    first = tensors[0]
    if first.is_floating_point() or first.is_complex():
        longest = max(t.shape[-1] for t in tensors)
        return torch.stack([F.pad(t, (0, longest - t.shape[-1])) for t in tensors])
    longest = max(t.shape[0] for t in tensors)
    value = False if first.dtype == torch.bool else PAD_ID
    padded = []
    for t in tensors:
        extra = t.new_full((longest - t.shape[0], *t.shape[1:]), value)
        padded.append(torch.cat((t, extra), dim = 0))
    return torch.stack(padded)


def _stack_cropped(tensors: Sequence[Tensor]) -> Tensor:
    shortest = min(t.shape[-1] for t in tensors)
    return torch.stack([t[..., :shortest] for t in tensors])


def _collate(batch: list, stack) -> tuple:
    if len(batch) == 0:
        raise ValueError('cannot collate an empty batch')
    first = batch[0]
    if not isinstance(first, (tuple, list)) or isinstance(first, str):
        batch = [(item,) for item in batch]

    num_fields = len(batch[0])
    if any(not isinstance(item, (tuple, list)) or len(item) != num_fields for item in batch):
        raise ValueError('every item in a batch must have the same fields')

    outputs = []
    for field in zip(*batch):
        if all(isinstance(v, str) for v in field):
            outputs.append(list(field))
        elif all(isinstance(v, Tensor) for v in field):
            # scalars (e.g. file_end flags) stack into (b,); everything else is padded / cropped
            outputs.append(torch.stack(field) if all(v.ndim == 0 for v in field) else stack(field))
        elif all(isinstance(v, (tuple, list)) for v in field):
            outputs.append(_collate(list(field), stack))   # nested fields, e.g. (text, (wave_16k, wave_24k))
        else:
            outputs.append(torch.utils.data.default_collate(list(field)))
    return tuple(outputs)


def collate_pad(batch: list) -> tuple:
    """Collate items (a tensor or a tuple of fields each): tensors are padded at the end to the longest item and
    stacked — audio with zeros along its last axis, integer token ids ``(n,)`` / codes ``(n, q)`` with ``PAD_ID``
    (-1, never a real id) along time, boolean masks with False; strings become a list. Always returns a tuple with
    one entry per field."""
    return _collate(batch, _stack_padded)


def collate_crop(batch: list) -> tuple:
    """Like ``collate_pad`` but crops every tensor field to its shortest item."""
    return _collate(batch, _stack_cropped)


@beartype
def get_dataloader(ds: Dataset, pad_to_longest: bool = True, **kwargs) -> DataLoader:
    """``DataLoader`` over ``ds`` that pads to the longest item (``pad_to_longest=True``) or crops to the
    shortest. Other keyword arguments go to ``DataLoader`` (``batch_size``, ``shuffle``, ``num_workers``, ...).

    Batches are tuples with one entry per item field: ``(wave (b, n),)`` for ``SoundDataset`` with one rate,
    ``(wave_16k (b, n1), wave_24k (b, n2))`` for two rates, ``(texts list[str], wave (b, n))`` for text–audio."""
    if 'collate_fn' in kwargs:
        raise ValueError('get_dataloader supplies its own collate_fn; build a torch DataLoader directly for another')
    return DataLoader(ds, collate_fn = collate_pad if pad_to_longest else collate_crop, **kwargs)
