"""Where a trainer's batches come from: a seeded validation split, a resumable, deterministic, process-sharded
batch stream, and the routing of collated fields into audio and text."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, random_split


class Batch(NamedTuple):
    """A collated batch routed by type: tensors in dataset order, strings as texts."""
    waves: tuple          # each (b, n), on the trainer's device
    texts: list | None    # list[str] of length b, or None


def route_batch(batch, device) -> Batch:
    """Route the fields of a collated batch by type: tensors are audio (in dataset order, nested tuples
    flattened), strings are text. Datasets may yield audio alone or ``(text, audio)`` in either order."""
    waves, texts = [], None

    def visit(field):
        nonlocal texts
        if isinstance(field, Tensor):
            waves.append(field.to(device, non_blocking = True))
        elif _is_texts(field):
            texts = [field] if isinstance(field, str) else list(field)
        elif isinstance(field, (tuple, list)):
            for sub in field:
                visit(sub)
        else:
            raise TypeError(f'cannot route a batch field of type {type(field).__name__}: datasets must yield '
                            'audio tensors and, optionally, text strings')

    visit(batch)
    if not waves:
        raise ValueError('the batch holds no audio tensor')
    return Batch(tuple(waves), texts)


def _is_texts(value) -> bool:
    return isinstance(value, str) or (isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value))


class StreamBatchSampler:
    """An endless, deterministic stream of shuffled epochs, cut into global batches and sharded over processes.

    Global batch ``k`` holds stream positions ``[k·B·W, (k+1)·B·W)`` (``B`` per-process batch size, ``W``
    processes); process ``r`` takes the ``r``-th slice of ``B``. Epoch ``e`` is a permutation seeded by
    ``(seed, e)``, so ``start`` (batches already consumed) is all it takes to resume, and one process with batch
    ``2B`` sees the same global batches as two processes with batch ``B``. Small datasets simply wrap around.
    """

    def __init__(self, num_items: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, start: int = 0):
        if num_items < 1:
            raise ValueError('cannot sample batches from an empty dataset')
        self.num_items, self.batch_size, self.rank, self.world_size = num_items, batch_size, rank, world_size
        self.seed, self.shuffle, self.start = seed, shuffle, start
        self._perms: dict[int, Tensor] = {}

    def _item(self, position: int) -> int:
        epoch, index = divmod(position, self.num_items)
        if not self.shuffle:
            return index
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)   # host-side, any default device
            self._perms = {epoch: torch.randperm(self.num_items, generator = generator, device = 'cpu')}
        return int(self._perms[epoch][index])

    def __iter__(self):
        batch_index = self.start
        while True:
            offset = (batch_index * self.world_size + self.rank) * self.batch_size
            yield [self._item(offset + j) for j in range(self.batch_size)]
            batch_index += 1


def split_train_valid(ds: Dataset, valid_frac: float, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded ``(train, valid)`` split holding ``valid_frac`` of ``ds`` (at least one item each); with
    ``valid_frac=0`` or a single item, both are ``ds`` itself."""
    if len(ds) == 0:
        raise ValueError('the dataset is empty')
    if valid_frac > 0 and len(ds) > 1:
        valid_size = min(len(ds) - 1, max(1, round(valid_frac * len(ds))))
        generator = torch.Generator().manual_seed(seed)
        train, valid = random_split(ds, [len(ds) - valid_size, valid_size], generator = generator)
        return train, valid
    return ds, ds


def cycle(dl: DataLoader):
    """Iterate a user-provided dataloader forever."""
    while True:
        yield from dl


def stream_batches(ds: Dataset, batch_size: int, *, rank: int, world_size: int, seed: int, start: int,
                   num_workers: int, pin_memory: bool):
    """An endless iterator of collated batches of ``ds`` starting at global batch ``start`` (see
    :class:`StreamBatchSampler`); audio is padded to the longest item, strings pass through."""
    from audiolm_pytorch.data import get_dataloader
    sampler = StreamBatchSampler(len(ds), batch_size, rank = rank, world_size = world_size, seed = seed, start = start)
    dl = get_dataloader(ds, batch_sampler = sampler, num_workers = num_workers,
                        generator = torch.Generator().manual_seed(seed * 7919 + start),  # no global RNG draw
                        pin_memory = pin_memory, persistent_workers = False)
    return iter(dl)
