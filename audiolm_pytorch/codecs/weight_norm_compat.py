"""Checkpoints load whether or not they were written with weight normalisation.

Weight normalisation (arXiv 1602.07868) reparametrises a conv weight ``w`` as ``g * v / ||v||``; torch stores it
as ``<conv>.parametrizations.weight.original0`` (``g``) and ``original1`` (``v``) instead of ``<conv>.weight``.
The map is exact both ways (``v = w``, ``g = ||w||`` per output row), so a checkpoint written before a codec
turned weight normalisation on (or after, into a codec built without it) loads into the other layout and computes
the same function. ``register(module)`` installs the conversion as a ``load_state_dict`` pre-hook.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_G, _V = '.parametrizations.weight.original0', '.parametrizations.weight.original1'


def _row_norm(v: Tensor) -> Tensor:
    """``||v||`` over every dim but 0, kept as ``(out, 1, ...)`` (torch's ``weight_norm(dim=0)``)."""
    return v.flatten(1).norm(dim = 1).reshape(-1, *([1] * (v.ndim - 1)))


def convert_state_dict(state_dict: dict, expected_keys: set[str], prefix: str = ''):
    """Rewrite, in place, plain ``.weight`` entries into weight-norm pairs where ``expected_keys`` (the keys the
    module holds, without ``prefix``) has the pair, and pairs into plain weights where it has the plain key."""
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.endswith('.weight') and name not in expected_keys:
            base = name[:-len('.weight')]
            if base + _G in expected_keys and base + _V in expected_keys:
                weight = state_dict.pop(key)
                state_dict[prefix + base + _V] = weight
                state_dict[prefix + base + _G] = _row_norm(weight.float()).to(weight.dtype)
        elif name.endswith(_G) and name not in expected_keys:
            base = name[:-len(_G)]
            if base + '.weight' in expected_keys and prefix + base + _V in state_dict:
                g, v = state_dict.pop(key), state_dict.pop(prefix + base + _V)
                state_dict[prefix + base + '.weight'] = (v.float() * (g.float() / _row_norm(v.float()))).to(v.dtype)


def register(module: nn.Module):
    """Make ``module.load_state_dict`` accept either weight layout (see the module docstring)."""
    def hook(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        with torch.no_grad():
            convert_state_dict(state_dict, set(module.state_dict(keep_vars = True)), prefix)
    module._register_load_state_dict_pre_hook(hook)
