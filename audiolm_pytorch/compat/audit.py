"""Resolve every reference keyword against this library: used by ``scripts/make_migration.py`` and the tests.

Input: the static extract of the reference packages (``tests/assets/reference_api.json``, made by
``scripts/extract_reference_api.py``). For each ``(name, member, keyword)`` the result says what our code does
with it: the compat table's :class:`~audiolm_pytorch.compat.core.Decision`, or ``accepted`` when our signature
takes the keyword under the same name (followed through ``**kwargs`` into base classes / the callee named in
``FORWARDS``), or ``None`` when nothing decides it (a bare ``TypeError`` - the tests forbid that).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

from audiolm_pytorch.compat.core import Decision, Handle, LegacyKeywordError, Positional, apply_legacy, table_for

__all__ = ['Resolution', 'load_reference', 'resolve', 'resolve_all', 'check_call']

# functions / methods whose **kwargs are passed on to another public callable
FORWARDS = {
    ('AudioLMSoundStream', '__call__'): ('SoundStream', '__init__'),
    ('MusicLMSoundStream', '__call__'): ('SoundStream', '__init__'),
}


@dataclass
class Resolution:
    name: str
    member: str
    keyword: str
    reference_default: str | None
    decision: Decision | None        # from a compat table
    accepted: bool                   # our signature takes it under this name (possibly via **kwargs)
    member_exists: bool

    @property
    def decided(self) -> bool:
        return self.decision is not None or self.accepted


def load_reference(path: str | Path | None = None) -> dict:
    path = Path(path) if path else Path(__file__).resolve().parents[2] / 'tests' / 'assets' / 'reference_api.json'
    return json.loads(Path(path).read_text())


def _public(name: str):
    import audiolm_pytorch
    return getattr(audiolm_pytorch, name, None)


def _callable(name: str, member: str):
    obj = _public(name)
    if obj is None:
        return None
    if member == '__call__' and not inspect.isclass(obj):
        return obj
    return getattr(obj, member, None)


def _owners(name: str, member: str):
    """Callables whose signature decides ``name.member``'s keywords: itself, then the ones ``**kwargs`` reach."""
    fn = _callable(name, member)
    if fn is None:
        return []
    out = [fn]
    obj = _public(name)
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        if (name, member) in FORWARDS:
            out += _owners(*FORWARDS[name, member])
        elif inspect.isclass(obj):
            for base in obj.__mro__[1:]:
                if member in base.__dict__ and base is not object:
                    out.append(base.__dict__[member])
                    if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(base.__dict__[member]).parameters.values()):
                        break
    return out


def _takes(name: str, member: str, keyword: str) -> bool:
    for fn in _owners(name, member):
        param = inspect.signature(fn).parameters.get(keyword)
        if param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            return True
    return False


def resolve(name: str, member: str, keyword: str, reference_default = None) -> Resolution:
    decision = table_for(name).get(member, {}).get(keyword)
    if isinstance(decision, Positional):
        decision = None
    return Resolution(name, member, keyword, reference_default, decision, _takes(name, member, keyword),
                      _callable(name, member) is not None)


def resolve_all(reference: dict | None = None) -> list[Resolution]:
    reference = reference or load_reference()
    out = []
    for entry in reference['names']:
        if entry['same_as']:
            continue
        for member, params in entry['members'].items():
            for param in params:
                out.append(resolve(entry['name'], member, param['name'], param['default']))
    return out


def check_call(name: str, member: str, keyword: str, value) -> str:
    """What a call ``name.member(keyword=value)`` does with the keyword, without running the body:
    ``'accepted'``, ``'warned'`` or ``'refused'`` (a :class:`LegacyKeywordError` with our message). A bare
    ``TypeError`` (the keyword reaches a signature that does not take it) propagates."""
    import warnings
    fn = _callable(name, member)
    if fn is None:
        raise AttributeError(f'{name} has no member {member!r}')
    table = table_for(name).get(member, {})
    decision = table.get(keyword)
    kwargs = {keyword: value}
    if isinstance(decision, Handle):        # implemented by code that needs the live object: tested separately
        return 'accepted'
    if isinstance(decision, Decision) and decision.intercepts:
        try:
            with warnings.catch_warnings(record = True) as caught:
                warnings.simplefilter('always')
                _, kwargs = apply_legacy(name, member, {keyword: decision}, None, (), kwargs)
        except LegacyKeywordError:
            return 'refused'
        if caught:
            return 'warned'
    for owner in _owners(name, member):
        signature = inspect.signature(owner)
        params = signature.parameters
        bindable = {k: v for k, v in kwargs.items()}
        if 'self' in params:
            signature.bind_partial(None, **bindable)
        else:
            signature.bind_partial(**bindable)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()) or all(k in params for k in kwargs):
            return 'accepted'
    return 'accepted'
