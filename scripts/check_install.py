"""Imports every module of an installed vae_jax, and checks that no `configs` package came with it.

`make check-install` runs this in a fresh virtual environment that holds only `pip install .`
(no test extra), from outside the source tree, so an import that only works because a test
dependency or the checkout happens to be there fails here. The wheel holds the package only:
the experiment configs (configs/*.py) stay in the repository, so `configs` must not import.

Run: python scripts/check_install.py   (from any directory; exits non-zero on a failure)
"""

import importlib
import importlib.util
import pathlib
import pkgutil
import sys
import traceback


def main() -> int:
    package = importlib.import_module('vae_jax')
    where = pathlib.Path(package.__file__).resolve()
    if 'site-packages' not in where.parts:
        print(f'vae_jax was imported from {where}, not from an installed copy.')
        return 1
    names = ['vae_jax']
    names += [info.name for info in pkgutil.walk_packages(package.__path__, prefix='vae_jax.')]
    failures = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # Report every module that fails, not just the first.
            failures.append(name)
            traceback.print_exc()
    print(f'imported {len(names) - len(failures)} of {len(names)} modules: {", ".join(names)}')
    if failures:
        print(f'FAILED to import: {", ".join(failures)}')
        return 1
    spec = importlib.util.find_spec('configs')
    if spec is not None:
        print(f'FAILED: a top-level `configs` package is importable ({spec.origin}); the wheel')
        print('must hold vae_jax only (pyproject.toml [tool.setuptools.packages.find]).')
        return 1
    print('no top-level `configs` package: OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())
