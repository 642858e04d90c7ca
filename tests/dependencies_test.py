"""Every third-party import of the package and its configs is a declared dependency.

The imports are read from the source (every `import` statement, at any depth, so a lazy import
inside a function counts too), mapped to the distributions that provide them in this
environment (`importlib.metadata.packages_distributions`), and looked up in
`[project].dependencies` of pyproject.toml. The test extra does not count: `pip install .`
does not install it.
"""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from absl.testing import absltest

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = frozenset({'vae_jax', 'configs'})


def _normalize(name):
    """PEP 503 normalised distribution name: `Foo_Bar.baz` -> `foo-bar-baz`."""
    return re.sub(r'[-_.]+', '-', name).lower()


def declared_distributions(pyproject_text):
    """Names of the distributions in `[project].dependencies`, normalised.

    Args:
      pyproject_text: the text of a pyproject.toml.

    Returns:
      A set of normalised distribution names (version specifiers and markers dropped).
    """
    dependencies = tomllib.loads(pyproject_text)['project']['dependencies']
    return {
        _normalize(re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', d).group(1)) for d in dependencies
    }


def imported_modules(source):
    """Top-level names of the absolute imports in a Python source (`a.b.c` -> `a`).

    Args:
      source: Python source text.

    Returns:
      A set of top-level module names; relative imports (`from . import x`) are left out.
    """
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


def undeclared_imports(sources, declared, module_to_distributions):
    """The third-party imports in `sources` that no declared distribution provides.

    Args:
      sources: file name -> Python source text.
      declared: normalised names of the declared distributions.
      module_to_distributions: top-level module name -> names of the distributions that
        install it (as `importlib.metadata.packages_distributions()` returns).

    Returns:
      A list, sorted by module, of `(module, file names, providers)` for every import that is
      neither first-party, nor in the standard library, nor provided by a declared
      distribution; `providers` is empty where no installed distribution provides the module.
    """
    where = {}
    for name, source in sources.items():
        for module in imported_modules(source):
            where.setdefault(module, set()).add(name)
    missing = []
    for module, names in sorted(where.items()):
        if module in FIRST_PARTY or module in sys.stdlib_module_names:
            continue
        providers = sorted(module_to_distributions.get(module, []))
        if not any(_normalize(p) in declared for p in providers):
            missing.append((module, sorted(names), providers))
    return missing


class DependenciesTest(absltest.TestCase):
    def test_every_third_party_import_is_declared(self):
        files = sorted([*(REPO / 'vae_jax').glob('*.py'), *(REPO / 'configs').glob('*.py')])
        self.assertGreater(len(files), 10)
        sources = {p.relative_to(REPO).as_posix(): p.read_text() for p in files}
        declared = declared_distributions((REPO / 'pyproject.toml').read_text())
        missing = undeclared_imports(sources, declared, importlib.metadata.packages_distributions())
        message = '\n'.join(
            f'`import {module}` in {", ".join(names)}: '
            + (
                f'provided by {" or ".join(providers)}, not in [project].dependencies'
                if providers
                else 'no installed distribution provides it'
            )
            for module, names, providers in missing
        )
        self.assertEmpty(missing, f'undeclared imports (add them to pyproject.toml):\n{message}')

    def test_reports_lazy_dotted_and_unknown_imports(self):
        # The check must be able to fail: a lazy import inside a function, a dotted `from`
        # import whose distribution is named differently from its module, an unknown module.
        source = (
            'import os\nimport numpy as np\nfrom . import sibling\n'
            'def f():\n    from PIL import Image\n    import not_a_module_xyz.sub\n'
        )
        self.assertEqual(imported_modules(source), {'os', 'numpy', 'PIL', 'not_a_module_xyz'})
        providers = {'numpy': ['numpy'], 'PIL': ['pillow']}
        self.assertEqual(
            undeclared_imports({'a.py': source}, {'numpy'}, providers),
            [('PIL', ['a.py'], ['pillow']), ('not_a_module_xyz', ['a.py'], [])],
        )
        self.assertEqual(
            undeclared_imports({'a.py': source}, {'numpy', 'pillow'}, providers),
            [('not_a_module_xyz', ['a.py'], [])],
        )

    def test_declared_names_are_normalised(self):
        text = (
            '[project]\nname = "x"\ndependencies = ["Foo_Bar>=1", "tfp-nightly==0.1.dev1", '
            '"baz.qux ; python_version >= \'3.11\'"]\n'
        )
        self.assertEqual(declared_distributions(text), {'foo-bar', 'tfp-nightly', 'baz-qux'})


if __name__ == '__main__':
    absltest.main()
