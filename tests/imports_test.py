"""The package's import graph (parsed with ast, imports inside functions included) has no cycle.

An import inside a function is for an optional third-party dependency only, never of a vae_jax
module (that is how a cycle hides). Modules stay small: each under `MAX_LINES`, the median under
`MAX_MEDIAN_LINES`.
"""

import ast
import pathlib
import statistics

from absl.testing import absltest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'vae_jax'
MAX_LINES = 600
MAX_MEDIAN_LINES = 400

# Function-level vae_jax imports that are not there to break a cycle:
#   the package's PEP 562 `__getattr__` imports `vae_jax.load` on first use, so that
#   `import vae_jax` does not import JAX;
#   train.py imports the trainer only after `jax.distributed.initialize`, which must come first.
ALLOWED_FUNCTION_IMPORTS = frozenset(
    {
        ('vae_jax', 'vae_jax.trained'),
        ('vae_jax.train', 'vae_jax.checkpoints'),
        ('vae_jax.train', 'vae_jax.run_files'),
        ('vae_jax.train', 'vae_jax.trainer'),
        ('vae_jax.train', 'vae_jax.sweep'),
    }
)


def _module_name(path: pathlib.Path) -> str:
    return 'vae_jax' if path.stem == '__init__' else f'vae_jax.{path.stem}'


def _imports(path: pathlib.Path, modules: frozenset[str]) -> list[tuple[str, bool]]:
    """(imported vae_jax module, whether the import is inside a function) for one file."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function = True
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                base = 'vae_jax' + (f'.{node.module}' if node.module else '')
            else:
                base = node.module or ''
            targets = [f'{base}.{alias.name}' for alias in node.names] + [base]
        for target in targets:
            if target in modules:
                found.append((target, in_function))
            elif target.startswith('vae_jax.') and target.rsplit('.', 1)[0] in modules:
                found.append((target.rsplit('.', 1)[0], in_function))
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(ast.parse(path.read_text(), str(path)), False)
    return [(t, f) for t, f in dict.fromkeys(found)]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """({module: imported vae_jax modules}, [(module, target) imported inside a function])."""
    paths = sorted(PACKAGE.glob('*.py'))
    modules = frozenset(_module_name(p) for p in paths)
    graph, in_functions = {}, []
    for path in paths:
        name = _module_name(path)
        graph[name] = set()
        for target, in_function in _imports(path, modules):
            if target == name:
                continue
            if target == 'vae_jax' and name != 'vae_jax':
                continue  # `from vae_jax import x` names the module x, not the package
            graph[name].add(target)
            if in_function:
                in_functions.append((name, target))
    return graph, in_functions


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


class ImportGraphTest(absltest.TestCase):
    def test_the_parser_sees_top_level_and_function_level_imports(self):
        graph, in_functions = _graph()
        self.assertIn('vae_jax.log_weights', graph['vae_jax.losses'])
        self.assertIn('vae_jax.objectives', graph['vae_jax.steps'])
        self.assertIn(('vae_jax', 'vae_jax.trained'), in_functions)

    def test_tarjan_finds_a_cycle(self):
        graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
        self.assertEqual(_cycles(graph), [['a', 'b', 'c']])
        self.assertEqual(_cycles({'a': {'b'}, 'b': set()}), [])

    def test_no_import_cycle(self):
        graph, _ = _graph()
        self.assertEqual(_cycles(graph), [], 'import cycles in vae_jax (modules of each cycle)')

    def test_no_vae_jax_import_inside_a_function(self):
        _, in_functions = _graph()
        hidden = sorted(set(in_functions) - ALLOWED_FUNCTION_IMPORTS)
        self.assertEqual(hidden, [], 'vae_jax modules imported inside a function (source, target)')


class ModuleSizeTest(absltest.TestCase):
    def test_modules_are_small(self):
        lengths = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob('*.py')}
        too_long = {name: n for name, n in lengths.items() if n >= MAX_LINES}
        self.assertEqual(sorted(too_long), [], f'modules >= {MAX_LINES} lines')
        self.assertLess(statistics.median(lengths.values()), MAX_MEDIAN_LINES)


if __name__ == '__main__':
    absltest.main()
