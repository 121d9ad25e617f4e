"""Configuration for the ``audiolm`` command line: YAML / JSON files plus dotted ``key=value`` overrides, and the
objects they name (codecs, semantic tokenizers, constructor keyword arguments checked as usage errors)."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

from audiolm_pytorch.transformers_dirs import transformers_model_type


class ConfigError(ValueError):
    """A configuration file, override or argument is malformed (the command line exits with code 2)."""


GENERATE_KEYS = ('codec', 'wav2vec', 'semantic', 'coarse', 'fine')
PATH_KEYS = ('path', 'checkpoint_path', 'kmeans_path')


# PyYAML implements YAML 1.1, whose implicit scalars silently turn plain words into other values: ``no`` / ``off``
# -> False, ``1:30`` -> 90 (base 60), ``0123`` -> 83 (octal), ``2024-01-01`` -> a date (which no checkpoint config
# can hold), while ``1.5e4`` and ``1e-4`` stay strings (1.1 wants a dot and a signed exponent). Configs and ``--set``
# values are read with the YAML 1.2 core schema instead: only true/false are booleans, integers are decimal (or
# 0x / 0o), floats are anything with a dot or an exponent, everything else is a string.
_INT_TAG, _FLOAT_TAG = 'tag:yaml.org,2002:int', 'tag:yaml.org,2002:float'
_BOOL_TAG, _TIMESTAMP_TAG = 'tag:yaml.org,2002:bool', 'tag:yaml.org,2002:timestamp'
_CORE_BOOL = re.compile(r'^(?:true|True|TRUE|false|False|FALSE)$')
_CORE_INT = re.compile(r'^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$')
_CORE_FLOAT = re.compile(r'^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?'
                         r'|[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF))|\.(?:nan|NaN|NAN))$')
_LOADER = None


def _construct_core_int(loader, node):
    text = loader.construct_scalar(node).replace('_', '')
    if text.startswith(('0x', '0o')):
        return int(text[2:], 16 if text[1] == 'x' else 8)
    return int(text, 10)   # '0123' is 123 (YAML 1.2), not octal


def _yaml_loader():
    global _LOADER
    if _LOADER is None:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        dropped = (_INT_TAG, _FLOAT_TAG, _BOOL_TAG, _TIMESTAMP_TAG)
        Loader.yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag not in dropped]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
        Loader.add_implicit_resolver(_BOOL_TAG, _CORE_BOOL, list('tTfF'))
        Loader.add_implicit_resolver(_INT_TAG, _CORE_INT, list('-+0123456789'))
        Loader.add_implicit_resolver(_FLOAT_TAG, _CORE_FLOAT, list('-+0123456789.'))
        Loader.add_constructor(_INT_TAG, _construct_core_int)
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


# ----------------------------------------------------------------------------------------------------------
# configs -> objects
# ----------------------------------------------------------------------------------------------------------

def load_config(path, overrides) -> dict:
    """Read a config file (paths inside it resolved against its folder) and apply ``--set`` overrides."""
    config = load_config_file(path)
    if path is not None:
        config = _resolve_paths(config, Path(path).resolve().parent)
    return apply_overrides(config, overrides)


def _resolve_paths(config: dict, base: Path) -> dict:
    def resolve(value):
        # relative to the config file's folder when the file is there, else as given (relative to the cwd)
        if isinstance(value, str) and value and not Path(value).is_absolute() and (base / value).exists():
            return str(base / value)
        return value

    def spec(value):
        if isinstance(value, dict):
            return {k: resolve(v) if k in PATH_KEYS else v for k, v in value.items()}
        return resolve(value) if isinstance(value, str) and value not in ('spectral',) else value

    return {key: spec(value) if key in GENERATE_KEYS else value for key, value in config.items()}


def load_codec(spec):
    """A codec from a SoundStream checkpoint path, a transformers EnCodec / DAC / Mimi directory, or a dict
    ``{kind, path, ...wrapper kwargs}``."""
    options = {}
    if isinstance(spec, dict):
        options = dict(spec)
        kind, path = options.pop('kind', None), options.pop('path', None)
        if path is None:
            raise ConfigError(f'codec spec {spec} needs a path')
    elif isinstance(spec, (str, Path)):
        kind, path = None, spec
    else:
        raise ConfigError(f'codec must be a path or a {{kind, path}} mapping, got {spec!r}')
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'codec not found: {path}')

    if path.is_dir():
        from audiolm_pytorch.codecs.pretrained import DacWrapper, EncodecWrapper, MimiWrapper
        wrappers = dict(encodec = EncodecWrapper, dac = DacWrapper, mimi = MimiWrapper)
        kind = kind or transformers_model_type(path)
        if kind not in wrappers:
            raise ValueError(f'{path} holds a transformers model of type {kind!r}; codecs read here: '
                             f'{", ".join(wrappers)} directories, or SoundStream checkpoint files')
        return construct(wrappers[kind], dict(pretrained_path = str(path), **options), f'codec ({kind})')

    if kind not in (None, 'soundstream'):
        raise ValueError(f'codec kind {kind!r} needs a transformers model directory, but {path} is a file')
    if options:  # a SoundStream is rebuilt from its checkpoint alone: nothing else may be silently dropped
        raise ConfigError(f'codec option(s) {sorted(options)} do not apply to a SoundStream checkpoint ({path}): '
                          'its config is stored in the file; give only {kind: soundstream, path: ...}')
    from audiolm_pytorch.checkpoint import read_checkpoint
    from audiolm_pytorch.codecs.soundstream import SoundStream
    stored = read_checkpoint(path).get('kind')
    if stored is not None and stored != 'SoundStream':
        raise ValueError(f'{path} holds a {stored}, not a codec: pass a SoundStream checkpoint or an '
                         'EnCodec / DAC / Mimi directory')
    return SoundStream.init_and_load_from(path).eval()


def load_semantic_tokenizer(spec):
    """A semantic tokenizer from a SpectralKmeansTokenizer checkpoint path or a ``{kind, ...}`` mapping."""
    if isinstance(spec, (str, Path)):
        spec = dict(kind = 'spectral', path = spec)
    if not isinstance(spec, dict):
        raise ConfigError(f'wav2vec must be a path or a {{kind, ...}} mapping, got {spec!r}')
    options = dict(spec)
    kind = options.pop('kind', 'spectral')
    for key in PATH_KEYS:
        if key in options and options[key] is not None and not Path(options[key]).exists():
            raise FileNotFoundError(f'wav2vec {key} not found: {options[key]}')
    if kind == 'spectral':
        from audiolm_pytorch.checkpoint import read_checkpoint
        from audiolm_pytorch.semantic.spectral import SpectralKmeansTokenizer
        path = options.get('path')
        unused = sorted(set(options) - {'path'})
        if unused:  # the tokenizer is rebuilt from its checkpoint alone: nothing else may be silently dropped
            raise ConfigError(f'wav2vec option(s) {unused} do not apply to kind spectral (its config is stored in '
                              'the checkpoint); give only {kind: spectral, path: ...}')
        if path is None:
            raise ConfigError('wav2vec kind spectral needs path: a checkpoint written by `audiolm fit-kmeans '
                             '--tokenizer spectral`')
        stored = read_checkpoint(path).get('kind')
        if stored is not None and stored != 'SpectralKmeansTokenizer':
            raise ValueError(f'{path} holds a {stored}, not a SpectralKmeansTokenizer')
        return SpectralKmeansTokenizer.init_and_load_from(path).eval()
    if kind in ('hubert', 'w2vbert'):
        from audiolm_pytorch.semantic.hubert_kmeans import HubertWithKmeans, W2VBertWithKmeans
        cls = HubertWithKmeans if kind == 'hubert' else W2VBertWithKmeans
        missing = [k for k in ('checkpoint_path', 'kmeans_path') if k not in options]
        if missing:
            raise ConfigError(f'wav2vec kind {kind} needs {" and ".join(missing)}')
        return construct(cls, options, f'wav2vec ({kind})').eval()
    if kind == 'vq-wav2vec':
        from audiolm_pytorch.semantic.vq_wav2vec import FairseqVQWav2Vec
        return construct(FairseqVQWav2Vec, options, 'wav2vec (vq-wav2vec)').eval()
    raise ConfigError(f'unknown wav2vec kind {kind!r}: use spectral, hubert, w2vbert or vq-wav2vec')


def coerce_kwargs(fn, kwargs: dict) -> dict:
    """YAML writes ``1`` for ``1.0``: turn ints into floats where the signature only takes floats (beartype is
    strict about it), including inside ``Sequence[float]`` arguments."""
    import inspect
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    out = dict(kwargs)
    for name, value in kwargs.items():
        annotation = parameters[name].annotation if name in parameters else None
        text = annotation if isinstance(annotation, str) else (
            annotation.__name__ if isinstance(annotation, type) else str(annotation))
        if 'float' not in text or 'int' in text.replace('float', ''):
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            out[name] = [float(v) for v in value]
    return out


def construct(cls, kwargs: dict, what: str, args: tuple = ()):
    """``cls(*args, **kwargs)`` with bad keyword arguments reported as a ``ConfigError`` naming ``what``."""
    kwargs = coerce_kwargs(cls.__init__, kwargs)
    try:
        return cls(*args, **kwargs)
    except TypeError as error:
        raise ConfigError(f'{what}: {error}') from error
    except Exception as error:
        if type(error).__module__.startswith('beartype'):   # a wrong type in the config
            raise ConfigError(f'{what}: {str(error).splitlines()[0]}') from error
        raise
