"""Compatibility module: scripts written for the established API import from
``audiolm_pytorch.audiolm_pytorch``. The code lives in the modular layout; this only re-exports."""

import audiolm_pytorch as _package

__all__ = [name for name in _package.__all__ if name != '__version__']


def __getattr__(name):
    if name in __all__:
        return getattr(_package, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
