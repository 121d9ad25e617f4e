"""One checkpoint format for every model and trainer.

A checkpoint is a ``torch.save`` dict that loads with ``torch.load(weights_only=True)`` (no pickled code):

    {
        'format': 'audiolm_pytorch', 'format_version': 1, 'version': '<library version>',
        'kind': '<class name>', 'config': '<JSON of the constructor keyword arguments>',
        'model': state_dict, 'ema_model': state_dict (optional, same keys as 'model'),
        'trainer': {...} (optional: optimizers, schedulers, step, RNG states),
    }

or a ``.safetensors`` file holding the weights with ``kind`` / ``config`` / ``version`` in its metadata.
Writes are atomic (temp file in the same folder, fsync, rename, fsync of the folder), so a crash never leaves half
a file.
Files written by the established ``audiolm-pytorch`` (``{'model', 'config': <pickled bytes>, ...}``) are read
too: their weights load, their pickled config is never unpickled.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import logging
import os
import pickle
import stat
import tempfile
from pathlib import Path
from typing import Any

import torch

from audiolm_pytorch.utils import exists, to_jsonable
from audiolm_pytorch.version import __version__

logger = logging.getLogger(__name__)

FORMAT_NAME = 'audiolm_pytorch'
FORMAT_VERSION = 1

_NESTED_KEY = '__checkpointable__'


def _current_umask() -> int:
    try:  # Linux: read it without touching the process-wide setting
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _file_mode_for(path: Path) -> int:
    """The permissions a plain ``open(path, 'wb')`` would give: an existing file keeps its own, a new one gets
    ``0o666 & ~umask``. (``mkstemp`` creates its temp file ``0o600``; renamed as is, every checkpoint would be
    unreadable to the group / other users, e.g. a separate inference service or a shared results folder.)"""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_current_umask()


def fsync_directory(directory: str | os.PathLike):
    """Make a rename inside ``directory`` durable: without it a power cut after ``os.replace`` can bring back the
    old directory entry (or none). Platforms that cannot open a directory (Windows) skip it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(f)`` on a temp file beside ``path`` (same folder, so the rename stays on one file system),
    fsync it, rename it over ``path`` and fsync the folder. A crash (even SIGKILL) at any point leaves either the
    old file or the new one at ``path``, never a partial file; a failed write removes its temp file."""
    path = Path(path)
    path.parent.mkdir(parents = True, exist_ok = True)
    fd, tmp_name = tempfile.mkstemp(prefix = f'.{path.name}.', suffix = '.tmp', dir = path.parent)
    try:
        os.chmod(tmp_name, _file_mode_for(path))
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise
    fsync_directory(path.parent)
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over ``path`` (``atomic_write``)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def _save_safetensors(state_dict: dict, metadata: dict, path: Path):
    from safetensors.torch import save
    tensors, seen = {}, set()
    for key, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.data_ptr() in seen:  # tied weights: safetensors refuses shared storage
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        tensors[key] = tensor
    payload = save(tensors, metadata = metadata)
    atomic_write(path, lambda f: f.write(payload))


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint without executing code. Returns a dict with at least ``model``; ``kind`` and
    ``config`` (a dict) are present when the file stores them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')

    if path.suffix == '.safetensors':
        from safetensors import safe_open
        from safetensors.torch import load_file
        try:
            with safe_open(str(path), framework = 'pt') as f:
                metadata = f.metadata() or {}
            weights = load_file(str(path))
        except Exception as error:  # safetensors raises its own SafetensorError for corrupt files
            raise ValueError(f'{path} is not a readable safetensors file ({error})') from error
        pkg = dict(model = weights, kind = metadata.get('kind'), version = metadata.get('version'))
        pkg['config'] = json.loads(metadata['config']) if 'config' in metadata else None
        return pkg

    try:
        pkg = torch.load(str(path), map_location = 'cpu', weights_only = True)
    except pickle.UnpicklingError as error:
        if 'global' in str(error).lower():
            raise ValueError(
                f'{path} is not a safe checkpoint (it needs arbitrary code to unpickle: {error}). '
                'Re-save it with this library, or convert its state dict to safetensors.') from error
        raise ValueError(f'{path} is not a readable checkpoint ({error}); the file may be truncated or corrupt') from error
    except OSError:        # missing file, no permission: as the OS said it
        raise
    except Exception as error:  # corrupt bytes reach the unpickler's internals: IndexError, KeyError, EOFError, ...
        raise ValueError(f'{path} is not a readable checkpoint ({type(error).__name__}: {error}); the file may be '
                         'truncated or corrupt') from error

    if not isinstance(pkg, dict):
        raise ValueError(f'{path} does not hold a checkpoint dict (found {type(pkg).__name__})')

    if 'model' not in pkg:
        # a bare state dict saved with torch.save(model.state_dict())
        if all(isinstance(v, torch.Tensor) for v in pkg.values()):
            return dict(model = pkg, kind = None, config = None)
        raise ValueError(f'{path} has no "model" entry; keys found: {sorted(pkg)[:10]}')

    pkg = dict(pkg)
    config = pkg.get('config')
    if pkg.get('format') == FORMAT_NAME and isinstance(config, str):
        pkg['config'] = json.loads(config)
    else:
        pkg['config'] = None  # legacy files pickle their config: never unpickled
    pkg.setdefault('kind', None)
    return pkg


def _strip_ema_prefix(state_dict: dict) -> dict:
    """ema_pytorch's ``EMA.state_dict()`` stores ``ema_model.<key>`` plus bookkeeping; keep the model keys."""
    if not any(k.startswith('ema_model.') for k in state_dict):
        return state_dict
    return {k[len('ema_model.'):]: v for k, v in state_dict.items() if k.startswith('ema_model.')}


def config_to_data(config: dict) -> dict:
    def convert(value):
        if isinstance(value, Checkpointable):
            return {_NESTED_KEY: type(value).__name__, 'config': config_to_data(value.config)}
        if isinstance(value, dict):
            keys = [k for k in value if not isinstance(k, str)]
            if keys:  # JSON would turn them into strings: the rebuilt model would get another dict
                raise TypeError(f'dict keys must be strings to survive the JSON config, found {keys[:3]!r}')
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, range)):
            return [convert(v) for v in value]
        return to_jsonable(value)
    data = {}
    for key, value in config.items():
        try:
            data[key] = convert(value)
        except TypeError as error:
            raise TypeError(f'constructor argument {key!r}: {error}. Pass data (numbers, strings, lists, dicts) or a '
                            'Checkpointable module so the model can be rebuilt from its checkpoint') from error
    return data


def with_legacy_defaults(cls: type, data: dict) -> dict:
    """A stored config with ``cls.legacy_defaults`` filled in for the keywords it lacks: a config written before
    a keyword's default changed rebuilds the network it was saved from."""
    legacy = getattr(cls, 'legacy_defaults', {})
    if not legacy:
        return data
    parameters = inspect.signature(cls.__init__).parameters     # a subclass may not take an inherited keyword
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return {**{k: v for k, v in legacy.items() if k not in data and (k in parameters or takes_any)}, **data}


def legacy_mismatches(cls: type, stored: dict, own: dict, where: str = '') -> list[tuple[str, Any, Any]]:
    """``(keyword path, stored value, own value)`` for each keyword of ``cls.legacy_defaults`` (and of nested
    checkpointable modules' classes) whose value in the stored config (data form, legacy defaults filled in)
    differs from the model's own: the two networks have different layouts."""
    changed = [(where + key, stored.get(key, legacy), own.get(key, legacy))
               for key, legacy in getattr(cls, 'legacy_defaults', {}).items()
               if stored.get(key, legacy) != own.get(key, legacy)]
    for key, value in stored.items():
        mine = own.get(key)
        if isinstance(value, dict) and _NESTED_KEY in value and isinstance(mine, dict) and \
                mine.get(_NESTED_KEY) == value[_NESTED_KEY]:
            nested = Checkpointable.registry.get(value[_NESTED_KEY])
            if exists(nested):
                changed += legacy_mismatches(nested, with_legacy_defaults(nested, value['config']), mine['config'],
                                             f'{where}{key}.')
    return changed


def config_from_data(data: dict) -> dict:
    def convert(value):
        if isinstance(value, dict) and _NESTED_KEY in value:
            cls = resolve_kind(value[_NESTED_KEY])
            return cls(**config_from_data(with_legacy_defaults(cls, value['config'])))
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value
    return {key: convert(value) for key, value in data.items()}


def resolve_kind(kind: str) -> type:
    cls = Checkpointable.registry.get(kind)
    if cls is None:
        # the class may live in a module not imported yet: importing the public package resolves it
        import audiolm_pytorch
        cls = getattr(audiolm_pytorch, kind, None)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, Checkpointable)):
        raise ValueError(f'checkpoint holds a model of unknown kind {kind!r}')
    return cls


class Checkpointable:
    """Mixin for ``nn.Module`` models: records the keyword arguments the outermost ``__init__`` was called
    with (as data, not pickled code) and provides ``save`` / ``load`` / ``init_and_load_from``.

    Subclass it alongside ``nn.Module`` (``class SoundStream(Checkpointable, nn.Module)``). Arguments must be
    JSON-able data or other ``Checkpointable`` modules (stored as nested configs).
    """

    registry: dict[str, type] = {}

    # Keywords whose default changed after checkpoints were written: ``{name: value before the change}``. Every
    # config recorded now names these keywords (defaulted or not), so a stored config that lacks one predates the
    # change and rebuilds with the old value (``init_and_load_from``, nested configs); ``load`` into a model built
    # with another value raises, naming the keyword.
    legacy_defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Checkpointable.registry[cls.__name__] = cls
        original_init = cls.__dict__.get('__init__')
        if original_init is None:
            return
        signature = inspect.signature(original_init)

        @functools.wraps(original_init)
        def recording_init(self, *args, **kwargs):
            outermost = not self.__dict__.get('_recording_config', False)
            if outermost:
                object.__setattr__(self, '_recording_config', True)
            try:
                original_init(self, *args, **kwargs)
            finally:
                if outermost:
                    object.__setattr__(self, '_recording_config', False)
            if outermost:
                bound = signature.bind(self, *args, **kwargs)
                config = {}
                for name, value in list(bound.arguments.items())[1:]:
                    if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                        config.update(value)
                    elif signature.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL:
                        if value:
                            raise TypeError(f'{cls.__name__} cannot record positional *args in its config')
                    else:
                        config[name] = value
                for name in type(self).legacy_defaults:   # always recorded (see legacy_defaults)
                    parameter = signature.parameters.get(name)
                    if name not in config and exists(parameter) and parameter.default is not inspect.Parameter.empty:
                        config[name] = parameter.default
                object.__setattr__(self, '_config', config)

        cls.__init__ = recording_init

    @property
    def config(self) -> dict:
        """The constructor keyword arguments this model was built with."""
        return copy.copy(self.__dict__.get('_config', {}))

    @property
    def configs(self) -> dict:  # name used by the established API
        return self.config

    def checkpoint_dict(self, *, ema_state_dict: dict | None = None, **extra) -> dict:
        pkg = dict(
            format = FORMAT_NAME, format_version = FORMAT_VERSION, version = __version__,
            kind = type(self).__name__, config = json.dumps(config_to_data(self.config)),
            model = self.state_dict(),
        )
        if exists(ema_state_dict):
            pkg['ema_model'] = ema_state_dict
        pkg.update(extra)
        return pkg

    def save(self, path: str | os.PathLike, **extra) -> Path:
        """Save config + weights. ``.safetensors`` paths hold weights with the config in the metadata."""
        path = Path(path)
        if path.suffix == '.safetensors':
            if extra:
                raise ValueError('safetensors checkpoints hold weights only; save extra state to a .pt path')
            metadata = dict(format = FORMAT_NAME, format_version = str(FORMAT_VERSION), version = __version__,
                            kind = type(self).__name__, config = json.dumps(config_to_data(self.config)))
            _save_safetensors(self.state_dict(), metadata, path)
            return path
        return atomic_save(self.checkpoint_dict(**extra), path)

    def load(self, path: str | os.PathLike, strict: bool = True, prefer_ema: bool = True):
        """Load weights from any checkpoint this library (or the established ``audiolm-pytorch``) wrote.
        EMA weights are used when present and ``prefer_ema``. Returns the raw checkpoint dict."""
        pkg = read_checkpoint(path)
        kind = pkg.get('kind')
        if exists(kind) and kind != type(self).__name__ and not isinstance(self, resolve_kind(kind)):
            raise ValueError(f'{path} holds a {kind}, not a {type(self).__name__}')

        stored_config = pkg.get('config')
        try:
            own_config = config_to_data(self.config)
        except TypeError:  # built with non-data arguments (a custom module): it cannot be saved, but it can load
            own_config = None
        if exists(stored_config) and exists(own_config):
            stored_config = with_legacy_defaults(type(self), stored_config)
            changed = legacy_mismatches(type(self), stored_config, own_config)
            if changed:
                wrote = ', '.join(f'{k}={a!r}' for k, a, _ in changed)
                has = ', '.join(f'{k}={b!r}' for k, _, b in changed)
                raise ValueError(
                    f'{path} holds a {type(self).__name__} built with {wrote} (the layout of the version that wrote '
                    f'it, {pkg.get("version")}), but this model has {has}: construct it with {wrote}, or rebuild it '
                    f'with {type(self).__name__}.init_and_load_from({str(path)!r})')
        if exists(stored_config) and exists(own_config) and stored_config != own_config:
            differing = sorted(k for k in set(stored_config) | set(own_config)
                               if stored_config.get(k) != own_config.get(k))
            logger.warning('loading %s into a %s whose config differs in: %s', path, type(self).__name__, differing)

        state_dict = pkg['model']
        if prefer_ema and exists(pkg.get('ema_model')):
            state_dict = _strip_ema_prefix(pkg['ema_model'])
        if pkg.get('format') != FORMAT_NAME:
            # written by audiolm-pytorch 2.4.0 in its own layout: converted where the networks match, else a
            # ReferenceCheckpointError that names what differs (audiolm_pytorch/reference_checkpoints.py)
            from audiolm_pytorch.reference_checkpoints import load_reference_layout
            if load_reference_layout(self, state_dict, strict = strict):
                return pkg
        result = self.load_state_dict(state_dict, strict = strict)
        if result.missing_keys or result.unexpected_keys:   # only reachable with strict=False: say what was skipped
            logger.warning('loading %s into a %s: %d missing keys %s, %d unexpected keys %s', path, type(self).__name__,
                           len(result.missing_keys), result.missing_keys[:8], len(result.unexpected_keys),
                           result.unexpected_keys[:8])
        return pkg

    @classmethod
    def init_and_load_from(cls, path: str | os.PathLike, strict: bool = True, prefer_ema: bool = True):
        """Rebuild the model from the config stored in ``path`` and load its weights."""
        pkg = read_checkpoint(path)
        if not exists(pkg.get('config')) or not exists(pkg.get('kind')):
            raise ValueError(
                f'{path} stores no model config (a legacy or bare state-dict file): construct the model with '
                f'its original arguments and call .load({str(path)!r}) instead')
        model_cls = resolve_kind(pkg['kind'])
        if not issubclass(model_cls, cls):
            raise ValueError(f'{path} holds a {pkg["kind"]}, not a {cls.__name__}')
        model = model_cls(**config_from_data(with_legacy_defaults(model_cls, pkg['config'])))
        model.load(path, strict = strict, prefer_ema = prefer_ema)
        return model
