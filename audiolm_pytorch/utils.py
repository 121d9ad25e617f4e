"""Small helpers shared across the package (no torch state, no side effects)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable

import torch


def exists(value) -> bool:
    return value is not None


def default(value, fallback):
    if exists(value):
        return value
    return fallback() if callable(fallback) else fallback


def cast_tuple(value, length: int = 1) -> tuple:
    if isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    return (value,) * length


def identity(x, *args, **kwargs):
    return x


def divisible_by(numerator: int, denominator: int) -> bool:
    return (numerator % denominator) == 0


def round_down_to_multiple(n: int, multiple: int) -> int:
    return (n // multiple) * multiple


def round_up_to_multiple(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def curtail_to_multiple(t: torch.Tensor, multiple: int, dim: int = -1) -> torch.Tensor:
    """Cut ``t`` along ``dim`` to the largest length that is a multiple of ``multiple``."""
    length = t.shape[dim]
    return t.narrow(dim, 0, round_down_to_multiple(length, multiple))


def first(iterable: Iterable[Any]):
    return next(iter(iterable))


@contextmanager
def eval_mode(module):
    """Run ``module`` in eval mode, then restore its previous training flag (also on error). Objects that are not
    ``nn.Module`` pass through."""
    if not isinstance(module, torch.nn.Module):
        yield module
        return
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def to_jsonable(value):
    """Convert constructor arguments to JSON-able data (tuples/ranges -> lists); raise on anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list, range)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.dtype):
        return str(value)
    raise TypeError(f'cannot store a value of type {type(value).__name__} in a checkpoint config')


def _make_beartype():
    from beartype import BeartypeConf
    from beartype import beartype as _beartype
    # PEP 484's numeric tower: an ``int`` is accepted where a ``float`` is annotated (``lr = 1``, YAML's ``1``)
    return _beartype(conf = BeartypeConf(is_pep484_tower = True))


beartype = _make_beartype()
"""Runtime type checking for public entry points (beartype, with ints accepted for floats)."""
