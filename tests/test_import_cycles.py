"""scripts/check_import_cycles.py: the package's internal imports form no cycle (function-level imports included),
and the checker finds the cycles it is meant to find. Checked against: the former ``semantic/kmeans.py`` ->
``hubert_kmeans`` deferred import (one cycle of three modules, exit 1)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('check_import_cycles', ROOT / 'scripts' / 'check_import_cycles.py')
checker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checker)


def write_package(root: Path, files: dict) -> Path:
    for name, text in files.items():
        path = root / 'pkg' / name
        path.parent.mkdir(parents = True, exist_ok = True)
        path.write_text(text)
    return root / 'pkg'


def test_the_package_has_no_import_cycle():
    result = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'check_import_cycles.py')],
                            capture_output = True, text = True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith('internal imports)') and result.stdout.startswith('0 import cycle(s)')


def test_a_function_level_import_of_a_caller_is_a_cycle(tmp_path):
    package = write_package(tmp_path, {
        '__init__.py': '',
        'algo.py': 'def fit():\n    from pkg.caller import thing\n    return thing\n',
        'caller.py': 'from pkg.algo import fit\nthing = 1\n',
        'other.py': 'from pkg import algo\n',
    })
    graph = checker.import_graph(package)
    assert graph['pkg.algo'] == {'pkg.caller'} and graph['pkg.caller'] == {'pkg.algo'}
    assert graph['pkg.other'] == {'pkg.algo'}          # `from pkg import module` names the module
    cycles = checker.find_cycles(graph)
    assert cycles == [['pkg.algo', 'pkg.caller']]
    assert checker.closed_path(graph, cycles[0]) == ['pkg.algo', 'pkg.caller', 'pkg.algo']
    assert checker.main([str(package)]) == 1


def test_relative_imports_long_cycles_and_type_checking(tmp_path):
    package = write_package(tmp_path, {
        '__init__.py': '',
        'sub/__init__.py': 'from .a import A\n',
        'sub/a.py': 'from ..b import B\nA = 1\n',
        'b.py': 'from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import C\nfrom . import c\nB = 2\n',
        'c.py': 'import pkg.sub.a\nC = 3\n',
        'd.py': 'from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.e import E\n',
        'e.py': 'from pkg.d import *\nE = 1\n',
    })
    graph = checker.import_graph(package)
    assert graph['pkg.sub'] == {'pkg.sub.a'} and graph['pkg.sub.a'] == {'pkg.b'}
    assert graph['pkg.d'] == set()                      # TYPE_CHECKING imports never run
    cycles = checker.find_cycles(graph)
    assert cycles == [['pkg.b', 'pkg.c', 'pkg.sub.a']]
    assert len(checker.closed_path(graph, cycles[0])) == 4


def test_no_cycle_exits_zero(tmp_path, capsys):
    package = write_package(tmp_path, {'__init__.py': '', 'a.py': 'import pkg.b\n', 'b.py': 'import os\n'})
    assert checker.main([str(package)]) == 0
    assert capsys.readouterr().out.startswith('0 import cycle(s) among 3 modules (1 internal imports)')
