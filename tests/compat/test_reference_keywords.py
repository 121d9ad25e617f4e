"""Scripts written for audiolm-pytorch 2.4.0, soundstorm-pytorch 0.6.1 and musiclm-pytorch 0.2.8 (issue 15).

The reference keywords come from ``tests/assets/reference_api.json``, extracted statically from the three wheels by
``scripts/extract_reference_api.py`` (tests run offline). Every keyword must have a decision (accepted, a
compatibility spelling, a shim, warned about or refused with a ``LegacyKeywordError``); none may raise a bare
``TypeError``. The shims with behaviour are tested in ``tests/compat/test_shims.py``.
"""

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

from audiolm_pytorch.compat import LegacyKeywordError, LegacyKeywordWarning, reset_warnings
from audiolm_pytorch.compat.audit import check_call, load_reference, resolve_all
from audiolm_pytorch.compat.core import Decision, Fixed, Refuse

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = load_reference()
ENTRIES = [e for e in REFERENCE['names'] if not e['same_as']]
KEYWORDS = [(e['name'], member, p) for e in ENTRIES for member, params in e['members'].items() for p in params]


def _value(default: str | None):
    """The reference default as a Python value where it is a literal (else a stand-in object)."""
    if default is None:
        return object()
    try:
        return eval(default, {'__builtins__': {}}, dict(dict = dict, tuple = tuple, range = range))
    except Exception:
        return object()


def _other(value):
    """A value different from a literal bool / None default (None when there is no obvious one)."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return 1
    return None


# ---- the extract and the public names ----------------------------------------------------------------------

def test_reference_extract_has_31_names_and_641_keywords():
    assert len(REFERENCE['names']) == 31
    assert len(KEYWORDS) == 641


# ---- every keyword: decided, never a bare TypeError ----------------------------------------------------------

def test_every_reference_keyword_has_a_decision():
    undecided = [f'{r.name}.{r.member}({r.keyword}=)' for r in resolve_all(REFERENCE) if not r.decided]
    assert not undecided, undecided


def _keyword_problems(name: str, member: str, param: dict) -> list[str]:
    """What is wrong with passing ``param`` to ``name.member`` (empty when nothing): it must be accepted, warned
    about, or refused with a LegacyKeywordError naming the keyword - never an unknown-keyword TypeError - and
    the reference default itself is never refused. Tried with the reference default and, for flags / None
    defaults, with another value. The call is bound against the real signatures (through **kwargs into base
    classes); the method bodies are not run (the shims with behaviour are tested in test_shims.py)."""
    values = [_value(param['default'])]
    if _other(values[0]) is not None:
        values.append(_other(values[0]))
    problems = []
    for value in values:
        reset_warnings()
        try:
            outcome = check_call(name, member, param['name'], value)
        except Exception as error:   # check_call reports refusals as 'refused': anything raised is a problem
            problems.append(f'{member}({param["name"]}={value!r}) raised {type(error).__name__}: {error}')
            continue
        if outcome not in ('accepted', 'warned', 'refused'):
            problems.append(f'{member}({param["name"]}={value!r}): unexpected outcome {outcome!r}')
        elif value is values[0] and param['default'] is not None and outcome == 'refused':
            problems.append(f'{member}({param["name"]}={param["default"]}) (the reference default) is refused')
    return problems


@pytest.mark.parametrize('entry', REFERENCE['names'], ids = lambda e: f"{e['package']}.{e['name']}")
def test_reference_name_imports_and_takes_every_reference_keyword(entry):
    """One test per reference class / function: it imports from the top level, has every reference member, and
    every keyword of every member is decided (never a bare TypeError; names recorded as ``same_as`` another have
    their keywords checked there). The failure lists every broken one."""
    name = entry['name']
    namespace = {}
    exec(f"from audiolm_pytorch import {name}", namespace)
    assert callable(namespace[name])
    problems = [f'{name}.{member} is missing' for member in entry['members']
                if member not in ('__init__', '__call__') and not hasattr(namespace[name], member)]
    for member, params in ({} if entry['same_as'] else entry['members']).items():
        for param in params:
            problems += [f'{name}.{problem}' for problem in _keyword_problems(name, member, param)]
    assert not problems, f'{len(problems)} problem(s):\n' + '\n'.join(problems)


def _refusing(decision: Decision) -> bool:
    return isinstance(decision, Refuse) or (isinstance(decision, Fixed) and decision.otherwise == 'refuse') or \
        bool(getattr(decision, 'refuses', ''))


def test_at_most_15_keywords_are_refused_and_each_says_what_to_do():
    refused = [r for r in resolve_all(REFERENCE) if r.decision is not None and _refusing(r.decision)]
    assert len(refused) <= 15, [f'{r.name}.{r.member}.{r.keyword}' for r in refused]
    for r in refused:
        assert len(r.decision.note) > 20, f'{r.name}.{r.member}({r.keyword}=) has no replacement in its message'


def test_refusal_is_a_type_error_and_a_value_error_naming_the_keyword():
    from audiolm_pytorch import SoundStream
    with pytest.raises(LegacyKeywordError) as info:
        SoundStream(codebook_size = 16, use_gate_loop_layers = True)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert 'use_gate_loop_layers=True' in str(info.value) and 'use_local_attn' in str(info.value)


def test_keywords_we_do_not_know_still_raise_type_error():
    from audiolm_pytorch import Conformer
    with pytest.raises(TypeError) as info:
        Conformer(dim = 8, depth = 1, not_a_keyword = 1)
    assert not isinstance(info.value, LegacyKeywordError)


# ---- warn once -----------------------------------------------------------------------------------------------

def test_keyword_without_effect_warns_once_per_process():
    from audiolm_pytorch import Conformer
    reset_warnings()
    with warnings.catch_warnings(record = True) as caught:
        warnings.simplefilter('always')
        Conformer(dim = 8, depth = 1, attn_flash = False)
        Conformer(dim = 8, depth = 1, attn_flash = False)
        Conformer(dim = 8, depth = 1, attn_flash = True)          # the value we implement: silent
    legacy = [w for w in caught if issubclass(w.category, LegacyKeywordWarning)]
    assert len(legacy) == 1 and 'attn_flash=False' in str(legacy[0].message)
    assert legacy[0].filename == __file__   # points at the caller's line, not into the library


def test_ignored_transformer_keywords_warn_and_keep_the_model_unchanged():
    from audiolm_pytorch import SemanticTransformer
    reset_warnings()
    torch.manual_seed(0)
    plain = SemanticTransformer(num_semantic_tokens = 10, dim = 16, depth = 1)
    torch.manual_seed(0)
    with pytest.warns(LegacyKeywordWarning, match = 'rel_pos_bias'):
        legacy = SemanticTransformer(num_semantic_tokens = 10, dim = 16, depth = 1, rel_pos_bias = False)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), legacy.state_dict().values()))
    assert 'rel_pos_bias' not in legacy.config   # the config saved with checkpoints holds only our keywords


# ---- MIGRATION.md is generated from the tables ---------------------------------------------------------------

def _make_migration():
    spec = importlib.util.spec_from_file_location('make_migration', ROOT / 'scripts' / 'make_migration.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_md_matches_the_code():
    text = _make_migration().render()
    assert (ROOT / 'MIGRATION.md').read_text() == text, 'run python scripts/make_migration.py'
    for name, member, param in KEYWORDS:
        assert f"`{param['name']}`" in text
    assert 'UNDECIDED' not in text


def test_reference_extract_is_reproducible_from_the_wheels_layout(tmp_path):
    """The extractor reads a package tree with ast only: a fake one-class package gives the expected record."""
    spec = importlib.util.spec_from_file_location('extract', ROOT / 'scripts' / 'extract_reference_api.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for package, _ in module.PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / '__init__.py').write_text(f'from {package}.core import Thing\n')
        (tmp_path / package / 'core.py').write_text(
            'class Thing:\n    def __init__(self, a, *, b = 2):\n        pass\n'
            '    @property\n    def p(self):\n        pass\n    def run(self, x, flag = False):\n        pass\n')
    data = module.extract(tmp_path)
    thing = data['names'][0]
    assert thing['members']['__init__'] == [
        dict(name = 'a', default = None, required = True, positional = True),
        dict(name = 'b', default = '2', required = False, positional = False)]
    assert set(thing['members']) == {'__init__', 'run'}
