"""Imports every module of an installed vae_jax (the package and its configs).

`make check-install` runs this in a fresh virtual environment that holds only `pip install .`
(no test extra), from outside the source tree, so an import that only works because a test
dependency or the checkout happens to be there fails here.

Run: python scripts/check_install.py   (from any directory; exits non-zero on a failed import)
"""

import importlib
import pathlib
import pkgutil
import sys
import traceback


def main() -> int:
    failures = []
    names = []
    for package_name in ('vae_jax', 'configs'):
        package = importlib.import_module(package_name)
        where = pathlib.Path(package.__file__).resolve()
        if 'site-packages' not in where.parts:
            print(f'{package_name} was imported from {where}, not from an installed copy.')
            return 1
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f'{package_name}.'):
            names.append(info.name)
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
    return 0


if __name__ == '__main__':
    sys.exit(main())
