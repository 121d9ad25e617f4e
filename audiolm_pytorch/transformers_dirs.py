"""Folders holding a transformers model (``save_pretrained``): what kind of model they hold. No torch import, so
the command line can use it before loading anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ['MissingModelConfigError', 'transformers_model_type']


class MissingModelConfigError(FileNotFoundError, ValueError):
    """A folder given as a transformers model directory has no ``config.json`` (both a ``FileNotFoundError``
    and a ``ValueError``: callers catch either)."""


def transformers_model_type(folder: str | os.PathLike) -> str:
    """``model_type`` of the transformers model saved in ``folder`` (its ``config.json``; ``''`` when unnamed)."""
    config_file = Path(folder) / 'config.json'
    if not config_file.is_file():
        raise MissingModelConfigError(f'{folder} is a directory without config.json: expected a transformers model '
                                      'directory (saved with save_pretrained), or a checkpoint file')
    return str(json.loads(config_file.read_text()).get('model_type', ''))
