"""Command line: flags -> `trainer.train_and_evaluate(config, workdir)`.

    python -m vae_jax.train --config configs/default.py --workdir runs/default \
        --config.beta=4 --config.k_samples=50

The config is locked, so a misspelt override (`--config.betta=4`) fails at parse time.
With `--config.sweep.beta=0.5,1,2` and/or `--config.sweep.seed=0,1` it trains the cross product
as one vectorised program (vae_jax/sweep.py), each model in `<workdir>/beta=<b>,seed=<s>`.
`--workdir` defaults to `runs/<config file stem>`.

Several hosts (README, "Multi-device and multi-host"): the same command on every process, with
the cluster described by the environment; see `distributed_init_args`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
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
_SKIP_DAMAGED = flags.DEFINE_bool(
    'skip_damaged_checkpoints',
    False,
    'If the newest checkpoint cannot be read, move it to <workdir>/damaged_checkpoints/ and '
    'resume from the newest one that can (never done without this flag).',
)
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed',
    'auto',
    ['auto', 'off'],
    'auto: call jax.distributed.initialize() when the environment describes a multi-process '
    'run (see distributed_init_args); off: never (e.g. independent runs inside one SLURM job).',
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
    """The arguments of `jax.distributed.initialize` for this process, or None (one process).

    A multi-process run is recognised from, in order:
      1. `JAX_COORDINATOR_ADDRESS=host:port` with `JAX_NUM_PROCESSES` > 1 and `JAX_PROCESS_ID`
         (any launcher; without the last two, JAX must detect them from SLURM or Open MPI);
      2. SLURM inside `srun` with more than one task (`SLURM_NTASKS` > 1, `SLURM_STEP_NODELIST`);
      3. Open MPI's `mpirun` with more than one process (`OMPI_COMM_WORLD_SIZE` > 1);
      4. a multi-host Cloud TPU slice (`TPU_WORKER_HOSTNAMES` lists more than one host).
    In cases 2-4 JAX detects the coordinator, process count and id itself. A SLURM batch script
    that runs python directly (no srun), or a job step with one task, is one process.

    Raises:
      ValueError: a malformed variable, or JAX_COORDINATOR_ADDRESS without the process count
        and id where no cluster can provide them.
    """
    address = environ.get('JAX_COORDINATOR_ADDRESS')
    slurm = 'SLURM_STEP_NODELIST' in environ and 'SLURM_PROCID' in environ
    slurm_tasks = _env_int(environ, 'SLURM_NTASKS') if slurm else None
    mpi_size = _env_int(environ, 'OMPI_COMM_WORLD_SIZE')
    if address:
        num_processes = _env_int(environ, 'JAX_NUM_PROCESSES')
        process_id = _env_int(environ, 'JAX_PROCESS_ID')
        if num_processes == 1:
            return None
        if (num_processes is None or process_id is None) and not (slurm or mpi_size):
            raise ValueError(
                f'JAX_COORDINATOR_ADDRESS={address!r} is set, so this is one process of a '
                'multi-process run: also set JAX_NUM_PROCESSES (the number of processes) and '
                'JAX_PROCESS_ID (0 .. JAX_NUM_PROCESSES-1), or unset it for a single process'
            )
        if num_processes is not None and not 0 <= (process_id or 0) < num_processes:
            raise ValueError(
                f'JAX_PROCESS_ID={process_id} is invalid; allowed: 0 .. {num_processes - 1} '
                f'(JAX_NUM_PROCESSES={num_processes})'
            )
        args = {'coordinator_address': address}
        if num_processes is not None:
            args['num_processes'] = num_processes
        if process_id is not None:
            args['process_id'] = process_id
        return args
    if slurm and (slurm_tasks or 1) > 1:
        return {}
    if mpi_size is not None and mpi_size > 1:
        return {}
    hosts = [h for h in environ.get('TPU_WORKER_HOSTNAMES', '').split(',') if h.strip()]
    if len(hosts) > 1:
        return {}
    return None


def _maybe_initialize_distributed() -> None:
    """Multi-host: joins the cluster when the environment describes one (before any JAX work)."""
    if _DISTRIBUTED.value == 'off':
        return
    args = distributed_init_args(os.environ)
    if args is not None:
        import jax

        jax.distributed.initialize(**args)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
    _maybe_initialize_distributed()
    from vae_jax import trainer  # After jax.distributed.initialize, which must come first.

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
        )
    except trainer.StoppedBySignal as e:
        print(f'{workdir}: {e}', file=sys.stderr)
        sys.exit(128 + e.signum)  # The shell's convention for "ended by signal N".


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    app.run(main)
