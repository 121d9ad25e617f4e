"""The one mechanism that applies the reference-keyword decisions (tables live in the subject modules).

Every keyword of ``audiolm-pytorch`` 2.4.0, ``soundstorm-pytorch`` 0.6.1 and ``musiclm-pytorch`` 0.2.8 that our
signatures do not take under the same name has a :class:`Decision` in a per-class table (``compat/codec.py``,
``lm.py``, ``trainers.py``, ``soundstorm.py``, ``musiclm.py``). :func:`reference_compat` decorates a class: it wraps
each method named in the class's table so that, before the (beartype-checked) method runs, the legacy keywords
are popped from the call and mapped, accepted, warned about (once) or refused with a message naming the
replacement. ``inspect.signature`` of a wrapped method is unchanged (``functools.wraps``).

``MIGRATION.md`` is rendered from these tables by ``scripts/make_migration.py``; a test regenerates it.
"""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ['Decision', 'Rename', 'Handle', 'Fixed', 'Ignore', 'Refuse', 'Drop', 'Note', 'Positional', 'AddMethod',
           'LegacyKeywordError', 'LegacyKeywordWarning', 'reference_compat', 'table_for', 'apply_legacy',
           'reset_warnings', 'SUBJECTS']

_MISSING = object()


class LegacyKeywordError(TypeError, ValueError):
    """A reference keyword (or value) this library refuses on purpose; the message names the replacement.

    A subclass of both ``TypeError`` (what an unknown keyword raised before) and ``ValueError`` (this project's
    error for bad input), so either ``except`` catches it."""


class LegacyKeywordWarning(UserWarning):
    """A reference keyword accepted for compatibility that has no effect (or a different one) here."""


_warned: set = set()


def reset_warnings():
    """Forget which legacy keywords already warned (each warns once per process)."""
    _warned.clear()


def warn_once(key, message: str):
    """A ``LegacyKeywordWarning`` pointing at the user's call, once per process per ``key``."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, LegacyKeywordWarning, stacklevel = _caller_level())


_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside this package (the user's call), so the warning points there."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE_DIR) or
                                 frame.f_code.co_filename.startswith('<@beartype')):
        frame, level = frame.f_back, level + 1
    return level


# ------------------------------------------------------------------------------------------------------------
# decisions
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen = True)
class Decision:
    """Base: ``kind`` is the MIGRATION.md category, ``note`` the explanation shown there and in messages."""
    note: str = ''
    kind = 'accepted'
    intercepts = True          # False: documentation only, the keyword is in our signature

    def apply(self, where: str, keyword: str, value, obj, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.note


@dataclass(frozen = True)
class Rename(Decision):
    """Compatibility spelling of our keyword ``to`` (same meaning; ``convert`` maps the value if given)."""
    to: str = ''
    convert: Callable | None = None
    kind = 'compatibility spelling'

    def apply(self, where, keyword, value, obj, args, kwargs):
        if self.to in kwargs:
            raise LegacyKeywordError(f'{where}: pass {keyword}= or {self.to}=, not both ({keyword} is the reference '
                                     f'spelling of {self.to})')
        kwargs[self.to] = self.convert(value) if self.convert else value
        return args, kwargs

    def describe(self):
        return f'spelling of `{self.to}`' + (f'; {self.note}' if self.note else '')


@dataclass(frozen = True)
class Handle(Decision):
    """Accepted with the reference's meaning, implemented by ``fn(obj, value, args, kwargs) -> (args, kwargs)``."""
    fn: Callable | None = None
    refuses: str = ''          # when the shim refuses a value (counted with the refused keywords)
    kind = 'accepted (reference meaning)'

    def apply(self, where, keyword, value, obj, args, kwargs):
        return self.fn(obj, value, args, kwargs)


@dataclass(frozen = True)
class Fixed(Decision):
    """This library always behaves like ``keyword=value`` (the reference default): that value is accepted
    silently; any other value is refused (``otherwise='refuse'``) or accepted with a one-time warning
    (``otherwise='warn'``). ``note`` says what to do instead."""
    value: Any = None
    otherwise: str = 'refuse'

    @property
    def kind(self):
        return 'only the reference default' if self.otherwise == 'refuse' else 'accepted; other values warn'

    def apply(self, where, keyword, value, obj, args, kwargs):
        if _equal(value, self.value):
            return args, kwargs
        message = f'{where}: {keyword}={value!r} is not supported here (only {keyword}={self.value!r}): {self.note}'
        if self.otherwise == 'refuse':
            raise LegacyKeywordError(message)
        warn_once((where, keyword), message + ' - the keyword has no effect')
        return args, kwargs

    def describe(self):
        action = 'refused' if self.otherwise == 'refuse' else 'accepted without effect, warns once'
        return f'`{self.value!r}` accepted (our behaviour); other values {action}: {self.note}'


@dataclass(frozen = True)
class Ignore(Decision):
    """Accepted, no effect here: warns once per process."""
    kind = 'accepted, no effect (warns once)'

    def apply(self, where, keyword, value, obj, args, kwargs):
        warn_once((where, keyword), f'{where}: {keyword}= has no effect in this library: {self.note}')
        return args, kwargs


@dataclass(frozen = True)
class Refuse(Decision):
    """Refused: raises :class:`LegacyKeywordError` naming the replacement."""
    kind = 'refused'

    def apply(self, where, keyword, value, obj, args, kwargs):
        raise LegacyKeywordError(f'{where}: {keyword}= is not supported by this library: {self.note}')


@dataclass(frozen = True)
class Drop(Decision):
    """Accepted and unused, exactly as in the reference (which ignores it too, or where our behaviour is what the
    value asks for): no warning, since nothing differs."""
    kind = 'accepted (same behaviour)'

    def apply(self, where, keyword, value, obj, args, kwargs):
        return args, kwargs


@dataclass(frozen = True)
class Note(Decision):
    """Documentation only: the keyword is in our signature; its default or meaning differs as ``note`` says."""
    intercepts = False
    kind = 'accepted, differs'


@dataclass(frozen = True)
class Positional:
    """A positional-order fix for a member: ``fn(obj, args, kwargs) -> (args, kwargs)``; ``note`` documents it."""
    fn: Callable
    note: str = ''


@dataclass(frozen = True)
class AddMethod:
    """A reference method our class lacks, provided here (``fn(self, *args, **kwargs)``); ``note`` documents it."""
    fn: Callable
    note: str = ''


def _equal(a, b) -> bool:
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # tensors and the like
        return False


# ------------------------------------------------------------------------------------------------------------
# tables and the decorator
# ------------------------------------------------------------------------------------------------------------

# subject module (under audiolm_pytorch.compat) -> the reference names whose tables it holds
SUBJECTS = {
    'codec': ('SoundStream', 'AudioLMSoundStream', 'MusicLMSoundStream', 'EncodecWrapper', 'HubertWithKmeans',
              'FairseqVQWav2Vec'),
    'lm': ('SemanticTransformer', 'CoarseTransformer', 'FineTransformer', 'SemanticTransformerWrapper',
           'CoarseTransformerWrapper', 'FineTransformerWrapper', 'AudioLM', 'get_embeds'),
    'trainers': ('SoundStreamTrainer', 'SemanticTransformerTrainer', 'CoarseTransformerTrainer',
                 'FineTransformerTrainer', 'SoundStormTrainer', 'MuLaNTrainer'),
    'soundstorm': ('SoundStorm', 'ConformerWrapper', 'Conformer'),
    'musiclm': ('MuLaN', 'MuLaNEmbedQuantizer', 'MusicLM', 'AudioSpectrogramTransformer', 'TextTransformer',
                'SigmoidContrastiveLearning', 'SoftmaxContrastiveLearning'),
}


def table_for(name: str) -> dict:
    """``{member: {keyword: Decision, '*args': Positional}}`` for a reference name (empty if none)."""
    for subject, names in SUBJECTS.items():
        if name in names:
            return importlib.import_module(f'audiolm_pytorch.compat.{subject}').TABLES.get(name, {})
    return {}


def apply_legacy(name: str, member: str, table: dict, obj, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Apply one member's decisions to a call; returns the arguments to pass on."""
    where = name if member == '__init__' else f'{name}.{member}'
    positional = table.get('*args')
    if positional is not None:
        args, kwargs = positional.fn(obj, args, kwargs)
    legacy = [k for k in kwargs if isinstance(table.get(k), Decision) and table[k].intercepts]
    if not legacy:
        return args, kwargs
    kwargs = dict(kwargs)
    for keyword in legacy:
        value = kwargs.pop(keyword)
        args, kwargs = table[keyword].apply(where, keyword, value, obj, args, kwargs)
    return args, kwargs


def _wrap(name: str, member: str, table: dict, method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        args, kwargs = apply_legacy(name, member, table, self, args, kwargs)
        return method(self, *args, **kwargs)
    wrapper.__reference_compat__ = (name, member)
    return wrapper


def reference_compat(name: str):
    """Class decorator: route the reference keywords of ``name``'s table through :func:`apply_legacy`."""
    def decorate(cls):
        for member, table in table_for(name).items():
            added = table.get('*method')
            if added is not None:
                if member in dir(cls):
                    raise TypeError(f'{name}.{member} exists: remove its AddMethod from the compat table')
                setattr(cls, member, added.fn)
            if not any(isinstance(d, Positional) or isinstance(d, Decision) and d.intercepts for d in table.values()):
                continue
            method = cls.__dict__.get(member) or getattr(cls, member)
            if isinstance(method, (staticmethod, classmethod)):
                raise TypeError(f'{name}.{member}: compat tables cannot wrap static / class methods')
            setattr(cls, member, _wrap(name, member, table, method))
        return cls
    return decorate
