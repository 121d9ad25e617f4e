"""Snapshots of every RNG the training loop touches (torch, CUDA, numpy, python), for exact resume and for
running validation / sampling without changing the training trajectory."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def rng_state() -> dict:
    """Every RNG this loop touches, as data that ``torch.load(weights_only=True)`` reads back."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = dict(
        torch = torch.get_rng_state(),
        numpy = [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        python = [py_state[0], list(py_state[1]), py_state[2]],
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    """Restore a snapshot taken by :func:`rng_state`."""
    torch.set_rng_state(state['torch'])
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.asarray(keys, dtype = np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@contextlib.contextmanager
def preserved_rng():
    """Run a block (validation, sampling) without changing any RNG the training trajectory depends on."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
