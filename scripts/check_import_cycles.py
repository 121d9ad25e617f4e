"""Static check: package-internal imports of ``audiolm_pytorch`` form no cycle.

Every ``import`` / ``from ... import`` in every module counts, including those inside functions (a deferred import
of a module's own caller is still a cycle, only hidden until run time); imports under ``if TYPE_CHECKING:`` do not
(they never run). ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of
``pkg``. Nothing is imported or executed: the files are parsed with ``ast``.

Prints one line per cycle (strongly connected group of modules, with one closed path through it) and exits 1
when there is any:

    python scripts/check_import_cycles.py [PACKAGE_DIR]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

DEFAULT_PACKAGE = Path(__file__).resolve().parent.parent / 'audiolm_pytorch'


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under the package."""
    package_dir = Path(package_dir)
    names = {}
    for path in sorted(package_dir.rglob('*.py')):
        parts = list(path.relative_to(package_dir.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        names['.'.join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or \
        (isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package-internal modules that ``module`` imports."""
    tree = ast.parse(path.read_text(encoding = 'utf-8'), filename = str(path))
    is_package = path.name == '__init__.py'
    found = set()

    def add(name: str):
        while name and name not in modules:   # `import a.b.c` where only `a.b` is ours as a file, etc.
            name = name.rpartition('.')[0]
        if name and name != module:
            found.add(name)

    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
            continue
        if node.level:   # relative: resolve against this module's package
            base = module.split('.') if is_package else module.split('.')[:-1]
            base = base[:len(base) - (node.level - 1)]
            source = '.'.join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ''
        for alias in node.names:
            candidate = f'{source}.{alias.name}'
            add(candidate if candidate in modules else source)
    return found


def import_graph(package_dir: Path = DEFAULT_PACKAGE) -> dict[str, set[str]]:
    modules = module_names(package_dir)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted: every module of a group reaches
    every other through imports. ``closed_path(graph, group)`` gives one cycle through a group."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    counter = [0]

    def visit(root: str):
        # iterative Tarjan: (node, iterator over its neighbours)
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, neighbours = work[-1]
            advanced = False
            for nxt in neighbours:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(groups)


def closed_path(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself inside the group (breadth first)."""
    members, start = set(group), group[0]
    parents, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return list(reversed(path)) + [start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return group


def main(argv = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    package_dir = Path(argv[0]) if argv else DEFAULT_PACKAGE
    graph = import_graph(package_dir)
    cycles = find_cycles(graph)
    edges = sum(len(v) for v in graph.values())
    for group in cycles:
        print(f'import cycle among {len(group)} modules ({", ".join(group)}): '
              + ' -> '.join(closed_path(graph, group)))
    print(f'{len(cycles)} import cycle(s) among {len(graph)} modules ({edges} internal imports)')
    return 1 if cycles else 0


if __name__ == '__main__':
    sys.exit(main())
