"""Configuration files for the ``audiolm`` command line: YAML / JSON files plus dotted ``key=value`` overrides."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration file or override is malformed."""


# YAML 1.1 (PyYAML) reads ``1e-4`` as a string: it wants a dot in floats. Configs are written by people who
# type learning rates that way, so this loader also reads exponent-only numbers as floats.
_EXPONENT_FLOAT = re.compile(r'^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$')
_LOADER = None


def _yaml_loader():
    global _LOADER
    if _LOADER is None:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        Loader.add_implicit_resolver('tag:yaml.org,2002:float', _EXPONENT_FLOAT, list('-+0123456789'))
        _LOADER = Loader
    return _LOADER


def _yaml_load(text: str):
    import yaml
    return yaml.load(text, Loader = _yaml_loader())


def load_config_file(path: str | os.PathLike | None) -> dict:
    """Read a ``.yaml`` / ``.yml`` / ``.json`` file into a dict (``{}`` for ``None``)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'config file not found: {path}')
    text = path.read_text(encoding = 'utf-8')
    try:
        if path.suffix in ('.yaml', '.yml'):
            data = _yaml_load(text)
        elif path.suffix == '.json':
            data = json.loads(text)
        else:
            raise ConfigError(f'config file {path} must end in .yaml, .yml or .json')
    except (ValueError, ImportError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f'cannot parse config file {path}: {error}') from error
    except Exception as error:  # yaml.YAMLError
        raise ConfigError(f'cannot parse config file {path}: {error}') from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'config file {path} must hold a mapping at the top level, found {type(data).__name__}')
    return data


def parse_value(text: str) -> Any:
    """``'3'`` -> 3, ``'1e-4'`` -> 1e-4, ``'[2,4]'`` -> [2, 4], ``'true'`` -> True, other text stays a string."""
    try:
        return _yaml_load(text)
    except Exception:
        return text


def apply_overrides(config: dict, overrides: list[str] | None) -> dict:
    """Apply ``section.key=value`` overrides (creating sections as needed) to a copy of ``config``."""
    config = copy.deepcopy(config)
    for override in overrides or []:
        if '=' not in override:
            raise ConfigError(f'override {override!r} must look like key.path=value')
        dotted, value = override.split('=', 1)
        keys = [k for k in dotted.strip().split('.') if k]
        if not keys:
            raise ConfigError(f'override {override!r} has an empty key')
        node = config
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f'override {override!r}: {key!r} is not a section')
            node = child
        node[keys[-1]] = parse_value(value)
    return config
