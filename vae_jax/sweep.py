"""Vectorised sweep: N models (different beta and seed) trained in one program.

    python -m vae_jax.train --config configs/default.py --workdir runs/beta_sweep \
        --config.sweep.beta=0.5,1,2,4 --config.sweep.seed=0,1

trains the cross product of `config.sweep.beta` and `config.sweep.seed` (8 models here). The
parameters and optimizer states are stacked on a leading model axis and one jitted call runs
`steps.train_chunk` vmapped over that axis, with each model's beta as a traced array and each
model's keys (`init_key`, `loop_key`, `data_key`, `eval_key`) derived from its own seed exactly as
a separate run derives them (`trainer.root_keys`). So model i draws the same initial parameters,
noise and batches as `--config.beta=b_i --config.seed=s_i` run on its own, and ends with the same
parameters up to float rounding (tests/sweep_test.py).

Each model writes `<workdir>/beta=<b>,seed=<s>/` exactly as that separate run would:
config.json (with its own beta and seed, and the sweep keys unset), metrics.jsonl, TensorBoard
events, checkpoints/, images/ and eval.json (plus an entry 'sweep' describing the program that
trained it; its 'wall_time_sec' and 'train_steps_per_sec' are those of the whole program). So
`vae_jax.evaluate`, `scripts/aggregate.py`, and even the plain trainer (to resume one model on its
own) read these directories like any other run. `<workdir>/sweep.json` lists the models.

Resume: there is no stacked checkpoint. Every model saves its own checkpoints at the usual
cadence; a rerun restores each unfinished model at the newest step that all of them have saved
(normally the newest step), stacks them and continues; finished models are skipped. A model
whose loss turns non-finite is reported and dropped (its directory keeps its last good
checkpoint and gets no eval.json); the others finish, then `RuntimeError` names the failures.

On 2 CPU cores vmapping trains no faster per model-step than running the models one after
another (0.8-0.9x: one model already fills both cores); the sweep saves wall time by loading the
data and compiling once (4 models: 1.75x at 600 steps each, 1.13x at 3,000;
benchmarks/sweep_vs_serial.py, experiments/beta_k_sweep/README.md). On an accelerator, which one
small model leaves mostly idle, the vmapped models fill the device.
Only values that keep shapes can be vectorised: `k_samples` changes shapes, so sweep it with
scripts/sweep_k.sh, or, for ELBO and IWAE models, as one program with vae_jax/k_sweep.py (every
model draws the largest k and masks the rest).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from vae_jax import data, run_files, trainer

SWEEP_FILE = 'sweep.json'


def is_sweep(config: ml_collections.ConfigDict) -> bool:
    """True when `config.sweep` asks for a vectorised sweep."""
    return config.sweep.beta is not None or config.sweep.seed is not None


def _parse(text: str | None, default: Any, cast: Callable[[str], Any], key: str) -> list[Any]:
    if text is None:
        return [default]
    tokens = [t.strip() for t in str(text).split(',') if t.strip()]
    try:
        values = [cast(t) for t in tokens]
    except ValueError:
        values = []
    if not values:
        kind = 'numbers' if cast is float else 'integers'
        raise ValueError(
            f'config.{key}={text!r} is invalid; allowed: comma-separated {kind}, e.g. '
            f'{"0.5,1,2" if cast is float else "0,1,2"}'
        )
    if len(set(values)) != len(values):
        raise ValueError(f'config.{key}={text!r} repeats a value; allowed: distinct values')
    return values


def model_name(beta: float, seed: int) -> str:
    """The directory of one model: 'beta=<b>,seed=<s>' with b in the shortest exact form."""
    text = str(int(beta)) if beta.is_integer() else repr(beta)
    return f'beta={text},seed={seed}'


def model_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """The configs of the sweep's models: {directory name: config of that separate run}.

    Each is `config` with `beta` and `seed` set to the model's values and `config.sweep` unset,
    i.e. exactly the config of `--config.beta=b --config.seed=s` without the sweep flags.

    Raises:
      ValueError: a malformed `config.sweep.beta` / `config.sweep.seed`.
    """
    betas = _parse(config.sweep.beta, config.beta, float, 'sweep.beta')
    seeds = _parse(config.sweep.seed, config.seed, int, 'sweep.seed')
    out = {}
    for beta in betas:
        for seed in seeds:
            c = copy.deepcopy(config)
            c.beta = float(beta)
            c.seed = int(seed)
            c.sweep.beta = None
            c.sweep.seed = None
            out[model_name(float(beta), int(seed))] = c
    return out


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    skip_damaged_checkpoints: bool = False,
    allow_unverified_checkpoints: bool = False,
) -> dict[str, dict[str, Any]]:
    """Trains (or resumes) every model of the sweep in one program and evaluates each.

    The models go through the trainer's one loop (`trainer.train_models`): the same log rows,
    evaluations, checkpoints, stop and resume behaviour and eval.json as separate runs, with one
    vmapped call per chunk.

    Args:
      config: an experiment config with `config.sweep.beta` and/or `config.sweep.seed` set.
      workdir: the sweep directory; model i writes `<workdir>/<model_name>/`.
      overwrite: delete a model's run of a different config instead of refusing.
      stop_at_step: stop this invocation at that step (checkpoints saved); a later call resumes.
      skip_damaged_checkpoints: as in the trainer, move a model's damaged newest checkpoint
        aside; all models then resume from the newest step that they all have.
      allow_unverified_checkpoints: as in the trainer, resume from checkpoints without a checksum.

    Returns:
      {model name: its eval.json contents} ({'step': ...} for each model when stopped early).

    Raises:
      ValueError: a malformed sweep, or a model directory holding a run of another config.
      run_files.WorkdirLocked: another process trains in `workdir` or a model's directory.
      RuntimeError: some models' losses or states became non-finite (the others finished), or
        a damaged checkpoint.
      trainer.StoppedBySignal: SIGINT/SIGTERM; every model saved a checkpoint.
    """
    start_time = time.time()
    workdir = Path(workdir)
    config = data.record_data_facts(config)  # npz / tfds: shapes into config.json (a copy).
    configs = model_configs(config)
    names = list(configs)
    workdir.mkdir(parents=True, exist_ok=True)
    sweep_info = {
        'keys': [k for k in ('beta', 'seed') if config.sweep[k] is not None],
        'models': names,
        'beta': config.sweep.beta,
        'seed': config.sweep.seed,
        'config': json.loads(config.to_json_best_effort()),
    }
    with run_files.WorkdirLock(workdir):  # Before sweep.json: a refused start changes nothing.
        (workdir / SWEEP_FILE).write_text(json.dumps(sweep_info, indent=2, sort_keys=True))
        base = trainer.Run(configs[names[0]])
        return trainer.train_models(
            {name: base.for_config(configs[name]) for name in names},
            {name: workdir / name for name in names},
            overwrite=overwrite,
            stop_at_step=stop_at_step,
            skip_damaged_checkpoints=skip_damaged_checkpoints,
            allow_unverified_checkpoints=allow_unverified_checkpoints,
            start_time=start_time,
            tracker_root=workdir,
            extra={
                'sweep': {
                    'workdir': str(workdir),
                    'num_models': len(names),
                    'note': 'trained in one vectorised program (vae_jax/sweep.py); wall time '
                    'and steps/s are those of the whole program',
                }
            },
        )
