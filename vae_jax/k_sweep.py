"""Vectorised k sweep: ELBO and IWAE models with different `k_samples` trained in one program.

`vae_jax/sweep.py` vmaps models that differ only in beta and seed; `k_samples` changes shapes,
so it cannot vary along a vmapped axis as it is. Here every model ("row") draws K = k_max
samples per example, the largest k (or Monte-Carlo KL sample count) of all rows, and computes
its own objective from the first k of them:

- IWAE-k (reparameterised gradient): log-weights beyond the row's k are set to -inf before the
  log-sum-exp, so they add exp(-inf) = 0 to the sum and get zero gradient;
  loss = -(logsumexp(log w) - log k).
- k-sample ELBO (Monte-Carlo KL, as in the IWAE paper's VAE rows): the reconstruction term is
  the mean of log p(x|z) over the first k draws and the KL the mean of log q - log p over the
  first `kl_samples` draws, each as a masked sum divided by the row's count.

Noise: a separate run of a row draws its k samples as `normal(key, (k, D))` from its
per-example key; under JAX's partitionable Threefry (`jax_threefry_partitionable`, the default
since jax 0.5) element [i, j] of a draw depends only on its index, so the first k rows of the
(k_max, D) draw made here are exactly that run's samples. With the flag off they are other
samples from the same distribution (a warning says so). Keys, data order, initial parameters
and optimizer states are each row's own, as in `sweep.py`; the rows' samples beyond their k cost
compute (every row computes k_max samples) but never reach their loss.

So row i follows the trajectory of `python -m vae_jax.train` with its own config, up to float
rounding (sums over k_max masked entries are not summed in the same order as over k);
tests/k_sweep_test.py compares them. Each row writes its own run directory through the trainer's
loop (`trainer.train_models`): config.json (its own objective and k), metrics.jsonl,
checkpoints, eval.json; resume, stops and failures as in the sweep. An ELBO row's metrics.jsonl
has two more columns than a separate ELBO run's, 'train/bound' and 'train/ess': the IWAE-k bound
and effective sample size of the same k draws (every row of one program logs the same keys).

Rows must share everything else (network, data, optimizer, schedule, cadences): they may differ
only in `ROW_KEYS` and the sweep's `seed` / `beta`. Supported objectives: 'elbo' with
`analytic_kl=False` and no free bits, 'iwae' with the 'reparam' estimator.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from vae_jax import bounds, config_validation, data, losses, registry, steps, trainer
from vae_jax import run as run_lib

# Config keys in which the rows of one program may differ (besides run.PER_MODEL_KEYS).
ROW_KEYS = ('objective', 'k_samples', 'kl_samples')
OBJECTIVES = ('elbo', 'iwae')


def check_row(config: ml_collections.ConfigDict, name: str) -> None:
    """Raises ValueError when the row's objective is not one this program computes exactly."""
    where = f'row {name!r}: config'
    if config.objective not in OBJECTIVES:
        raise ValueError(f'{where}.objective={config.objective!r}; allowed: {OBJECTIVES}')
    if config.objective == 'iwae' and config.gradient_estimator != 'reparam':
        raise ValueError(
            f"{where}.gradient_estimator={config.gradient_estimator!r}; allowed: 'reparam'"
        )
    if config.objective == 'elbo' and config.analytic_kl:
        raise ValueError(f'{where}.analytic_kl=True; allowed: False (a Monte-Carlo KL)')
    if config.objective == 'elbo' and config.free_bits:
        raise ValueError(f'{where}.free_bits={config.free_bits}; allowed: 0.0')


def row_values(configs: list[ml_collections.ConfigDict]) -> dict[str, jax.Array]:
    """The per-row values the objective reads, each [N]: k, kl_samples, log k, iwae."""
    k = [int(c.k_samples) for c in configs]
    # An IWAE row reports its KL over its k draws, as `losses.model_iwae` does.
    kl = [int(c.k_samples if c.objective == 'iwae' else c.kl_samples) for c in configs]
    return {
        'k': jnp.asarray(k, jnp.int32),
        'kl_samples': jnp.asarray(kl, jnp.int32),
        # math.log in float64, then rounded: the float32 constant `model_iwae` subtracts.
        'log_k': jnp.asarray([math.log(v) for v in k], jnp.float32),
        'iwae': jnp.asarray([c.objective == 'iwae' for c in configs]),
    }


def num_draws(config: ml_collections.ConfigDict) -> int:
    """Samples a separate run of the row draws per example."""
    if config.objective == 'iwae':
        return int(config.k_samples)
    return max(int(config.k_samples), int(config.kl_samples))


def row_objective(
    key: jax.Array,
    model: losses.LatentModel,
    *,
    beta: jax.Array,
    k_max: int,
    k: jax.Array,
    kl_samples: jax.Array,
    log_k: jax.Array,
    iwae: jax.Array,
) -> dict[str, jax.Array]:
    """One example of one row: its own objective from the first k of k_max draws.

    Args:
      key: the example's loss key (as the row's own objective would get it).
      model: the example's model, parameters bound.
      beta: [] KL weight.
      k_max: static; draws per example, >= every row's k and kl_samples.
      k, kl_samples: [] int32, the row's sample counts (traced: one per row under vmap).
      log_k: [] float32, log k.
      iwae: [] bool, IWAE-k (else the k-sample ELBO).

    Returns:
      {'loss', 'bound', 'recon', 'kl', 'elbo', 'ess'}: each [], the values `losses.model_iwae`
      (IWAE rows) or `losses.model_elbo` (ELBO rows; plus 'bound' and 'ess' of its k draws)
      give for the row's k.
    """
    z, log_qz = losses.sample_with_log_q(key, model, k_max)
    log_px = model.log_likelihood(z)
    log_ratio = model.log_prior(z) - log_qz
    index = jnp.arange(k_max)
    in_k, in_kl = index < k, index < kl_samples
    # -inf outside the row's k: exp(-inf) = 0 in the log-sum-exp, and zero gradient.
    log_w_beta = jnp.where(in_k, log_px + beta * log_ratio, -jnp.inf)
    log_w = jnp.where(in_k, log_px + log_ratio, -jnp.inf)
    k_f = k.astype(jnp.float32)
    recon = -jnp.sum(jnp.where(in_k, log_px, 0.0)) / k_f
    kl = -jnp.sum(jnp.where(in_kl, log_ratio, 0.0)) / kl_samples.astype(jnp.float32)
    iwae_loss = -(jax.nn.logsumexp(log_w_beta) - log_k)
    elbo_loss = recon + beta * kl
    return {
        'loss': jnp.where(iwae, iwae_loss, elbo_loss),
        'bound': jax.nn.logsumexp(log_w) - log_k,
        'recon': recon,
        'kl': kl,
        'elbo': jnp.where(iwae, jnp.sum(jnp.where(in_k, log_w, 0.0)) / k_f, -(recon + kl)),
        'ess': bounds.ess(jax.lax.stop_gradient(log_w)),
    }


_ROW_OBJECTIVE = registry.Objective(
    'k_sweep_row', row_objective, doc='one row of a k sweep: its own ELBO or IWAE-k at k_max'
)


@dataclasses.dataclass(frozen=True)
class RowStepConfig(steps.StepConfig):
    """The program's step configuration (k_samples = k_max) with one row's objective.

    `row` holds that row's traced values (`row_values`, one row under the model-axis vmap); it
    is not part of equality or hashing.
    """

    k_max: int = 1
    row: dict[str, jax.Array] | None = dataclasses.field(default=None, compare=False)

    def objective_fn(self, beta, step=0, aux=None):
        del step, aux  # the rows' objectives have no schedule and no auxiliary network
        return _ROW_OBJECTIVE, {'beta': beta, 'k_max': self.k_max, **self.row}


def make_chunk_fn(runs: list[run_lib.Run]):
    """The vmapped multi-step call of the rows `runs` (the trainer's `make_chunk_fn` hook)."""
    base = runs[0]
    k_max = max(num_draws(r.config) for r in runs)
    fields = {f.name: getattr(base.static, f.name) for f in dataclasses.fields(base.static)}
    fields['k_max'] = k_max
    rows = row_values([r.config for r in runs])

    def body(state, perm, perm_epoch, images, labels, loop_key, data_key, beta_row, *, num_steps):
        beta, row = beta_row
        chunk = base.chunk_with(RowStepConfig(**fields, row=row))
        return chunk(
            state, perm, perm_epoch, images, labels, loop_key, data_key, beta, num_steps=num_steps
        )

    vmapped = run_lib.make_vmapped_chunk_fn(base, body)

    def chunk_fn(
        state, perm, perm_epoch, images, labels, loop_keys, data_keys, betas, *, num_steps
    ):
        return vmapped(
            state,
            perm,
            perm_epoch,
            images,
            labels,
            loop_keys,
            data_keys,
            (betas, rows),
            num_steps=num_steps,
        )

    return chunk_fn


def row_runs(configs: dict[str, ml_collections.ConfigDict]) -> dict[str, run_lib.Run]:
    """One `Run` per row, sharing the first row's data, model, optimizer and mesh.

    Each run has its row's config and step configuration (objective, k) and its seed's keys;
    evaluation functions are shared (they do not depend on the objective).

    Raises:
      ValueError: a row's objective is not supported (`check_row`), or rows differ in more
        than `ROW_KEYS`, seed and beta.
    """
    names = list(configs)
    for name in names:
        config_validation.validate(configs[name])
        check_row(configs[name], name)
    base = trainer.Run(configs[names[0]])
    runs = {names[0]: base}
    for name in names[1:]:
        config = configs[name]
        shared = copy.deepcopy(config)
        for key in ROW_KEYS:
            shared[key] = base.config[key]
        run = base.for_config(shared)  # checks that nothing else differs
        run.config = config
        run.static = steps.StepConfig.from_config(
            config, base.data_shape, base.model, dataset_size=base.static.dataset_size
        )
        run.parts = dataclasses.replace(base.parts, config=config, static=run.static)
        runs[name] = run
    return runs


def latest_step(run_dir: Path) -> int:
    """The newest checkpoint step in `run_dir/checkpoints` (0 without any)."""
    saved = [int(p.name) for p in (run_dir / 'checkpoints').glob('*') if p.name.isdigit()]
    return max(saved, default=0)


def check_same_step(configs: dict[str, ml_collections.ConfigDict], workdir: Path) -> None:
    """Refuses rows that would resume from different steps.

    The trainer restarts all models of one program from the newest step they have in common, so
    a row added to a program part-way would send the others back to step 0.

    Raises:
      ValueError: naming each unfinished row's step.
    """
    found = {
        name: latest_step(workdir / name)
        for name, config in configs.items()
        if latest_step(workdir / name) < config.num_train_steps
    }
    if len(set(found.values())) > 1:
        where = ', '.join(f'{name} at step {step}' for name, step in found.items())
        raise ValueError(
            f'{workdir}: the unfinished rows would resume from different steps ({where}); '
            'allowed: rows at one step (train a new row in a program of its own)'
        )


def train_and_evaluate(
    configs: dict[str, ml_collections.ConfigDict],
    workdir: str | Path,
    *,
    overwrite: bool = False,
    stop_at_step: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Trains (or resumes) every row in one program; row `name` writes `<workdir>/<name>/`.

    Args:
      configs: {row name: the config of that row's separate run}.
      workdir: the parent directory of the rows' run directories.
      overwrite, stop_at_step: as in `trainer.train_and_evaluate`.

    Returns:
      {row name: its eval.json contents} ({'step': ...} each when stopped early).

    Raises:
      ValueError: as `row_runs` and `check_same_step`, or a row directory holding a run of
        another config.
      trainer.StoppedBySignal: SIGINT/SIGTERM; every row saved a checkpoint.
    """
    start_time = time.time()
    if not jax.config.jax_threefry_partitionable:
        logging.warning(
            'jax_threefry_partitionable is off: a row with k < k_max draws other samples than '
            'its separate run would (from the same distribution)'
        )
    configs = {name: data.record_data_facts(c) for name, c in configs.items()}
    workdir = Path(workdir)
    check_same_step(configs, workdir)
    runs = row_runs(configs)
    k_max = max(num_draws(c) for c in configs.values())
    return trainer.train_models(
        runs,
        {name: workdir / name for name in runs},
        overwrite=overwrite,
        stop_at_step=stop_at_step,
        start_time=start_time,
        make_chunk_fn=make_chunk_fn,
        extra={
            'k_sweep': {
                'workdir': str(workdir),
                'rows': list(runs),
                'k_max': k_max,
                'note': 'trained in one vectorised program with every row drawing k_max '
                'samples (vae_jax/k_sweep.py); wall time and steps/s are those of the whole '
                'program',
            }
        },
    )
