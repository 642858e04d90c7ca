"""Imports every module of an installed vae_jax, and checks that no `configs` package came with it.

`make check-install` runs this in a fresh virtual environment that holds only `pip install .`
(no test extra), from outside the source tree, so an import that only works because a test
dependency or the checkout happens to be there fails here. The wheel holds the package only:
the experiment configs (configs/*.py) stay in the repository, so `configs` must not import.

Given a published run directory, it also loads that run with `vae_jax.load` (config.json and
the parameters-only checkpoint, no data set) and checks that the model decodes and scores.

Run: python scripts/check_install.py [RUN_DIR]   (from any directory; non-zero on a failure)
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
    if len(sys.argv) > 1:
        return load_published(pathlib.Path(sys.argv[1]))
    return 0


def load_published(workdir: pathlib.Path) -> int:
    """`vae_jax.load` on a published run: its model decodes and scores finite log-likelihoods."""
    import jax
    import numpy as np

    import vae_jax

    model = vae_jax.load(workdir)
    x = model.sample(jax.random.key(0), 2)
    log_px = model.log_likelihood(jax.random.key(1), (x > 0.5).astype(np.float32), 10)
    if x.shape[1:] != model.parts.data_shape or not np.all(np.isfinite(log_px)):
        print(f'FAILED: vae_jax.load({workdir}): samples {x.shape}, log p(x) {log_px}')
        return 1
    print(f'vae_jax.load({workdir}) at step {model.step}: samples {x.shape}, log p(x) {log_px}: OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())
