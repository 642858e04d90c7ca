"""Command line: flags -> `trainer.train_and_evaluate(config, workdir)`.

    python -m vae_jax.train --config configs/default.py --workdir runs/default \
        --config.beta=4 --config.k_samples=50

The config is locked, so a misspelt override (`--config.betta=4`) fails at parse time.
`--workdir` defaults to `runs/<config file stem>`.
"""

from __future__ import annotations

import os
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to an experiment config file (configs/*.py).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory; default runs/<config file stem>.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Delete a run of a different config found in --workdir and start again.'
)


def default_workdir(config_path: str) -> str:
    """runs/<stem of the config file>, e.g. configs/default.py -> runs/default."""
    return str(Path('runs') / Path(config_path.split(':')[0]).stem)


def _maybe_initialize_distributed() -> None:
    """Multi-host: join the cluster when the standard environment variables say so."""
    import jax

    cluster_vars = ('JAX_COORDINATOR_ADDRESS', 'SLURM_JOB_ID', 'TPU_WORKER_HOSTNAMES')
    if (
        any(os.environ.get(v) for v in cluster_vars)
        and int(os.environ.get('JAX_NUM_PROCESSES', '2')) > 1
    ):
        jax.distributed.initialize()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
    _maybe_initialize_distributed()
    from vae_jax import trainer  # After jax.distributed.initialize, which must come first.

    workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
    trainer.train_and_evaluate(_CONFIG.value, workdir, overwrite=_OVERWRITE.value)


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    app.run(main)
