"""Command line: flags -> `trainer.train_and_evaluate(config, workdir)`.

    python -m vae_jax.train --config configs/default.py --workdir runs/default \
        --config.beta=4 --config.k_samples=50

The config is locked, so a misspelt override (`--config.betta=4`) fails at parse time.
With `--config.sweep.beta=0.5,1,2` and/or `--config.sweep.seed=0,1` it trains the cross product
as one vectorised program (vae_jax/sweep.py), each model in `<workdir>/beta=<b>,seed=<s>`.
`--workdir` defaults to `runs/<config file stem>`.

Several hosts (README, "Multi-device and multi-host"): the same command on every process. The
explicit variables (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`) are checked
and passed on; otherwise `jax.distributed.initialize()` detects the cluster itself (SLURM, Open MPI,
mpi4py, Kubernetes, Cloud TPU, ...) and a process outside any cluster runs alone. With
`--distributed=off` it never joins one (e.g. independent runs inside one SLURM allocation).
Process 0 takes the workdir's lock for the whole run.

A run that cannot start (misspelt key, bad value, missing file, workdir in use, damaged
checkpoint) or whose checkpoint cannot be saved ends with one line on stderr, `error: ...`, and
exit status 1; `--traceback` shows the Python traceback too (vae_jax/cli.py). `--verbosity` sets
the absl log level (and shows the libraries' logs).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from vae_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to an experiment config file (configs/*.py).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory; default runs/<config file stem>.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Delete a run of a different config found in --workdir and start again.'
)
_SKIP_DAMAGED = flags.DEFINE_bool(
    'skip_damaged_checkpoints',
    False,
    'If the newest checkpoint cannot be read, move it to <workdir>/damaged_checkpoints/ and '
    'resume from the newest one that can (never done without this flag).',
)
_ALLOW_UNVERIFIED = flags.DEFINE_bool(
    'allow_unverified_checkpoints',
    False,
    'Resume from a checkpoint whose checksum is missing (its _CHECKPOINT_METADATA deleted), '
    'with a warning; without this flag such a checkpoint is refused.',
)
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed',
    'auto',
    ['auto', 'off'],
    'auto: join a multi-process run when the JAX_* variables describe one or JAX detects a '
    'cluster (jax.distributed.initialize()); off: never (e.g. independent runs inside one '
    'SLURM job).',
)


def default_workdir(config_path: str) -> str:
    """runs/<stem of the config file>, e.g. configs/default.py -> runs/default."""
    return str(Path('runs') / Path(config_path.split(':')[0]).stem)


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    if name not in environ:
        return None
    try:
        return int(environ[name])
    except ValueError:
        raise ValueError(
            f'environment variable {name}={environ[name]!r} is invalid; allowed: an integer'
        ) from None


def distributed_init_args(environ: Mapping[str, str]) -> dict[str, object] | None:
    """Arguments of `jax.distributed.initialize` from the explicit JAX_* variables, or None.

    `JAX_COORDINATOR_ADDRESS=host:port` with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (any
    launcher); with only the address, JAX must detect the other two from the cluster. None when
    the address is unset (then JAX's own cluster detection decides) or for one process.

    Raises:
      ValueError: a malformed variable.
    """
    address = environ.get('JAX_COORDINATOR_ADDRESS')
    if not address:
        return None
    num_processes = _env_int(environ, 'JAX_NUM_PROCESSES')
    process_id = _env_int(environ, 'JAX_PROCESS_ID')
    if num_processes == 1:
        return None
    if num_processes is not None and not 0 <= (process_id or 0) < num_processes:
        raise ValueError(
            f'JAX_PROCESS_ID={process_id} is invalid; allowed: 0 .. {num_processes - 1} '
            f'(JAX_NUM_PROCESSES={num_processes})'
        )
    args: dict[str, object] = {'coordinator_address': address}
    if num_processes is not None:
        args['num_processes'] = num_processes
    if process_id is not None:
        args['process_id'] = process_id
    return args


# jax.distributed.initialize()'s error when no cluster is detected and nothing is set.
_NO_CLUSTER = 'coordinator_address should be defined'


def _maybe_initialize_distributed() -> None:
    """Joins a multi-process run (before any JAX work): explicit variables, else JAX detects."""
    if _DISTRIBUTED.value == 'off':
        return
    import jax

    args = distributed_init_args(os.environ)
    if args is not None:
        jax.distributed.initialize(**args)
        return
    if os.environ.get('JAX_NUM_PROCESSES') == '1':
        return
    try:
        jax.distributed.initialize()  # JAX's cluster auto-detection.
    except ValueError as e:
        if _NO_CLUSTER not in str(e):
            raise
        # No cluster detected: one process.


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    _maybe_initialize_distributed()
    # After jax.distributed.initialize, which must come first.
    from vae_jax import trainer

    workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
    train_fn = trainer.train_and_evaluate
    if _CONFIG.value.sweep.beta is not None or _CONFIG.value.sweep.seed is not None:
        from vae_jax import sweep  # N models (config.sweep.*) in one vectorised program.

        train_fn = sweep.train_and_evaluate
    try:
        train_fn(
            _CONFIG.value,
            workdir,
            overwrite=_OVERWRITE.value,
            skip_damaged_checkpoints=_SKIP_DAMAGED.value,
            allow_unverified_checkpoints=_ALLOW_UNVERIFIED.value,
        )
    except trainer.StoppedBySignal as e:
        print(f'{workdir}: {e}', file=sys.stderr)
        sys.exit(128 + e.signum)  # The shell's convention for "ended by signal N".


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    cli.run(main)
