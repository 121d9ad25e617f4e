"""Extract every public name and keyword of the three reference packages, statically (``ast``, no import).

Writes ``tests/assets/reference_api.json``, which the compatibility tests and ``scripts/make_migration.py`` read
(tests run offline, so the list is committed). Regenerate with the reference wheels unpacked somewhere::

    pip download --no-deps audiolm-pytorch==2.4.0 soundstorm-pytorch==0.6.1 musiclm-pytorch==0.2.8 -d /tmp/ref
    (cd /tmp/ref && for w in *.whl; do unzip -oq $w; done)
    python scripts/extract_reference_api.py /tmp/ref

(or point it at a site-packages holding the installed references). Scope, as in the API audit: the names the
packages' ``__init__.py`` import; for a class, ``__init__`` and every public method defined in its body (not
properties, not ``nn.Module`` inherited ones); for a function, its own signature (member ``__call__``).
"""

import ast
import json
import sys
from pathlib import Path

PACKAGES = (('audiolm_pytorch', '2.4.0'), ('soundstorm_pytorch', '0.6.1'), ('musiclm_pytorch', '0.2.8'))
OUT = Path(__file__).resolve().parent.parent / 'tests' / 'assets' / 'reference_api.json'


def _params(fn: ast.FunctionDef) -> list[dict]:
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    pos_defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    out = []
    for index, (arg, default) in enumerate(zip(positional, pos_defaults)):
        if arg.arg in ('self', 'cls'):
            continue
        out.append(dict(name = arg.arg, default = None if default is None else ast.unparse(default),
                        required = default is None, positional = True))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        out.append(dict(name = arg.arg, default = None if default is None else ast.unparse(default),
                        required = default is None, positional = False))
    return out


def _is_property(fn) -> bool:
    return any(isinstance(d, ast.Name) and d.id == 'property' or
               isinstance(d, ast.Attribute) and d.attr in ('setter', 'getter', 'deleter') for d in fn.decorator_list)


def _resolve(root: Path, module: str, name: str):
    """(module, ast node) defining ``name``, following ``from x import name`` re-exports."""
    path = root / (module.replace('.', '/') + '.py')
    if not path.exists():
        path = root / module.replace('.', '/') / '__init__.py'
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            return module, node
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names) and node.module:
            target = node.module if node.level == 0 else '.'.join(module.split('.')[:-node.level] + [node.module])
            return _resolve(root, target, name)
    raise LookupError(f'{name} not found in {module}')


def extract(root: Path) -> dict:
    names = []
    seen_objects = {}
    for package, version in PACKAGES:
        init = ast.parse((root / package / '__init__.py').read_text())
        for node in init.body:
            if not isinstance(node, ast.ImportFrom) or node.module.split('.')[0] != package:
                continue
            for alias in node.names:
                module, obj = _resolve(root, node.module, alias.name)
                entry = dict(package = package, version = version, name = alias.name, defined_in = module,
                             kind = 'class' if isinstance(obj, ast.ClassDef) else 'function', members = {})
                if isinstance(obj, ast.FunctionDef):
                    entry['members']['__call__'] = _params(obj)
                else:
                    for item in obj.body:
                        if not isinstance(item, ast.FunctionDef) or _is_property(item):
                            continue
                        if item.name.startswith('_') and item.name != '__init__':
                            continue
                        entry['members'][item.name] = _params(item)
                key = (module, alias.name)
                entry['same_as'] = seen_objects.get(key)
                seen_objects.setdefault(key, f'{package}.{alias.name}')
                names.append(entry)
    return dict(source = 'static ast read of ' + ', '.join(f'{p}=={v}' for p, v in PACKAGES), names = names)


if __name__ == '__main__':
    root = Path(sys.argv[1])
    data = extract(root)
    OUT.write_text(json.dumps(data, indent = 1) + '\n')
    n_names = len(data['names'])
    n_kw = sum(len(ps) for e in data['names'] if not e['same_as'] for ps in e['members'].values())
    print(f'{n_names} names, {n_kw} keywords -> {OUT}')
