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
scripts/sweep_k.sh.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from vae_jax import checkpoints, data, run_files, steps, trainer

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


def _state_axes(state: steps.TrainState) -> steps.TrainState:
    """vmap axes of a stacked state: model axis 0 everywhere except the shared scalar step.

    Keeping the step unbatched keeps the epoch (step // steps_per_epoch) unbatched, so the
    `lax.cond` that redraws the permutation at an epoch boundary stays a branch instead of
    becoming a select that draws a permutation at every step.
    """
    return jax.tree.map(lambda _: 0, state).replace(step=None)


def make_chunk_fn(run: trainer.Run) -> Callable[..., Any]:
    """The trainer's chunk (`run.chunk_body`) vmapped over the model axis and jitted.

    `run.chunk_body` is `steps.train_chunk` with the run's static settings, the function that
    `run.chunk_fn` jits for a separate run, so a separate run and a sweep cannot drift apart in
    how they call it. Compiled with the same XLA options. One compile per `num_steps`.

    The returned function takes (state [stacked], perm [N, num_examples], perm_epoch [],
    train_images, train_labels, loop_keys [N], data_keys [N], betas [N], *, num_steps) and
    returns (state, perm, perm_epoch, metric sums: dict of [N]).
    """
    chunk = run.chunk_body

    def vmapped(state, perm, perm_epoch, images, labels, loop_keys, data_keys, betas, *, num_steps):
        axes = _state_axes(state)
        return jax.vmap(
            functools.partial(chunk, num_steps=num_steps),
            in_axes=(axes, 0, None, None, None, 0, 0, 0),
            out_axes=(axes, 0, None, 0),
        )(state, perm, perm_epoch, images, labels, loop_keys, data_keys, betas)

    return jax.jit(
        vmapped,
        static_argnames=('num_steps',),
        donate_argnums=(0, 1),
        compiler_options=steps.compiler_options(),
    )


def stack_states(states: list[steps.TrainState]) -> steps.TrainState:
    """N states at the same step -> one state with a leading model axis (the step stays [])."""
    steps_ = {int(s.step) for s in states}
    assert len(steps_) == 1, steps_
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[s.replace(step=None) for s in states])
    return stacked.replace(step=states[0].step)


def unstack_state(state: steps.TrainState, i: int) -> steps.TrainState:
    """Model i of a stacked state, as the state a separate run would hold."""
    return jax.tree.map(lambda a: a[i], state.replace(step=None)).replace(step=state.step)


def _common_step(managers: list[ocp.CheckpointManager]) -> int | None:
    """The newest step that every manager has saved, or None."""
    common = None
    for manager in managers:
        saved = set(manager.all_steps())
        common = saved if common is None else common & saved
    return max(common) if common else None


def _restore(manager: ocp.CheckpointManager, state: steps.TrainState, step: int | None):
    """The checkpoint at `step` (None: `state` itself); the newest one is checksum-verified."""
    if step is None:
        return state
    if step == manager.latest_step():
        return checkpoints.restore_latest(manager, state)[0]
    return manager.restore(step, args=ocp.args.StandardRestore(state))


def _save(manager: ocp.CheckpointManager, step: int, state: steps.TrainState) -> None:
    # A model restored at an older common step may already hold this step: keep it.
    if step not in manager.all_steps():
        checkpoints.save(manager, step, state)


def _restore_windows(dirs: list[Path], step: int) -> tuple[dict[str, np.ndarray], int]:
    """The log window open at checkpoint `step` (run_files.restore_window), stacked over models."""
    windows = [run_files.restore_window(d, step) for d in dirs]
    if len({start for _, start in windows}) != 1 or not any(sums for sums, _ in windows):
        return {}, step
    keys = sorted(set().union(*(sums for sums, _ in windows)))
    sums = {k: np.array([w[0].get(k, 0.0) for w in windows], np.float64) for k in keys}
    return sums, windows[0][1]


def _model_sums(sums: dict[str, np.ndarray], i: int) -> dict[str, float]:
    return {k: float(v[i]) for k, v in sums.items()}


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    skip_damaged_checkpoints: bool = False,
) -> dict[str, dict[str, Any]]:
    """Trains (or resumes) every model of the sweep in one program and evaluates each.

    Mirrors `trainer.train_and_evaluate` model by model (the same log rows, evaluations,
    checkpoints, stop and resume behaviour and eval.json), with one vmapped call per chunk.

    Args:
      config: an experiment config with `config.sweep.beta` and/or `config.sweep.seed` set.
      workdir: the sweep directory; model i writes `<workdir>/<model_name>/`.
      overwrite: delete a model's run of a different config instead of refusing.
      stop_at_step: stop this invocation at that step (checkpoints saved); a later call resumes.
      skip_damaged_checkpoints: as in the trainer, move a model's damaged newest checkpoint
        aside; all models then resume from the newest step that they all have.

    Returns:
      {model name: its eval.json contents} ({'step': ...} for each model when stopped early).

    Raises:
      ValueError: a malformed sweep, or a model directory holding a run of another config.
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
    (workdir / SWEEP_FILE).write_text(json.dumps(sweep_info, indent=2, sort_keys=True))

    base = trainer.Run(configs[names[0]])
    runs = {name: base.for_config(configs[name]) for name in names}
    dirs = {name: workdir / name for name in names}
    managers = {}
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        run_files.prepare_workdir(dirs[name], configs[name], overwrite=overwrite)
        managers[name] = checkpoints.checkpoint_manager(dirs[name], config.keep_checkpoints)
        if skip_damaged_checkpoints:  # Moves damaged newest checkpoints aside.
            fresh = runs[name].create_train_state()
            checkpoints.restore_latest(managers[name], fresh, skip_damaged=True)
        done = trainer.finished_result(dirs[name], config, managers[name].latest_step() or 0)
        if done is not None:
            results[name] = done
    active = [name for name in names if name not in results]
    if not active:
        return results

    restored_step = _common_step([managers[n] for n in active])
    states = [_restore(managers[n], runs[n].create_train_state(), restored_step) for n in active]
    state = jax.device_put(stack_states(states), base.replicated)
    del states
    step = int(state.step)
    if restored_step is not None:
        print(f'{workdir}: resuming {len(active)} models from their checkpoints at step {step}')
    logs = {
        n: run_files.MetricsLog(dirs[n], step, final_step=config.num_train_steps) for n in active
    }

    chunk_fn = make_chunk_fn(base)
    train_images = jax.device_put(base.train_data['image'], base.replicated)
    train_labels = jax.device_put(base.train_data['label'], base.replicated)
    # Everything committed to the same sharding as the chunk's outputs, so the second call hits
    # the first call's compile.
    loop_keys, data_keys, betas, perm_epoch = jax.device_put(
        (
            jnp.stack([runs[n].loop_key for n in active]),
            jnp.stack([runs[n].data_key for n in active]),
            jnp.asarray([configs[n].beta for n in active], jnp.float32),
            jnp.asarray(step // base.steps_per_epoch, jnp.int32),
        ),
        base.replicated,
    )
    num_examples = base.train_data['image'].shape[0]
    permutations = jax.vmap(steps.epoch_permutation, in_axes=(0, None, None))
    perm = jax.device_put(
        jax.jit(permutations, static_argnums=2)(data_keys, perm_epoch, num_examples),
        base.replicated,
    )

    throughput = trainer.Throughput()
    sums, window_start = _restore_windows([dirs[n] for n in active], step)
    window_time = time.time()
    failed: dict[str, str] = {}
    bar = tqdm.tqdm(
        total=config.num_train_steps,
        initial=step,
        desc=f'train {len(active)} models',
        unit='step',
        mininterval=1.0,
    )

    def live():
        return [(i, n) for i, n in enumerate(active) if n not in failed]

    def fail(name: str, error: RuntimeError) -> None:
        # Where the trainer would stop the run, the sweep drops the model and goes on.
        failed[name] = str(error)
        print(f'{dirs[name]}: FAILED, dropped from the sweep: {error}')
        logs[name].close()

    try:
        with trainer.StopSignal() as stop:
            while step < config.num_train_steps:
                boundary = trainer.next_boundary(step, config, stop_at_step)
                num_steps = min(config.steps_per_call, boundary - step)
                t0 = time.time()
                state, perm, perm_epoch, chunk_sums = chunk_fn(
                    state,
                    perm,
                    perm_epoch,
                    train_images,
                    train_labels,
                    loop_keys,
                    data_keys,
                    betas,
                    num_steps=num_steps,
                )
                chunk_sums = jax.device_get(chunk_sums)  # The one host sync per chunk.
                throughput.record(num_steps, time.time() - t0)
                step += num_steps
                trainer.add_sums(sums, chunk_sums, lambda v: np.asarray(v, np.float64))
                bar.update(num_steps)

                if step % config.log_every_steps == 0 or step == config.num_train_steps:
                    rate = (step - window_start) / max(time.time() - window_time, 1e-9)
                    for i, name in live():
                        row = trainer.window_row(_model_sums(sums, i), step - window_start)
                        # Written even when non-finite: the record of where the model diverged.
                        logs[name].write(step, {**row, 'train/steps_per_sec': rate})
                        try:
                            trainer.check_finite(row, window_start, step, managers[name])
                        except RuntimeError as e:
                            fail(name, e)
                    sums, window_start, window_time = {}, step, time.time()
                if step % config.eval_every_steps == 0 and step < config.num_train_steps:
                    for i, name in live():
                        metrics = runs[name].evaluate(unstack_state(state, i))
                        logs[name].write(step, trainer.scalar_metrics(metrics, 'eval'))
                signum = trainer.agreed_signal(stop)
                stopping = signum is not None or (
                    step == stop_at_step and step < config.num_train_steps
                )
                save = step % config.checkpoint_every_steps == 0 or step == config.num_train_steps
                for i, name in live():
                    try:
                        model_sums = _model_sums(sums, i)
                        if stopping and model_sums:  # A partial log window: check it, keep it.
                            row = trainer.window_row(model_sums, step - window_start)
                            trainer.check_finite(row, window_start, step, managers[name])
                        if save or stopping:
                            _save(managers[name], step, unstack_state(state, i))
                        if stopping:
                            run_files.save_window(dirs[name], step, window_start, model_sums)
                            logs[name].close()
                    except RuntimeError as e:
                        fail(name, e)
                if stopping:
                    if signum is not None:
                        raise trainer.StoppedBySignal(signum, step)
                    return {name: {'step': step} for name in active}
    finally:
        bar.close()
        for manager in managers.values():
            manager.close()

    steps_per_sec = throughput.steps_per_sec
    extra = {
        'sweep': {
            'workdir': str(workdir),
            'num_models': len(active),
            'note': 'trained in one vectorised program (vae_jax/sweep.py); wall time and '
            'steps/s are those of the whole program',
        }
    }
    for i, name in live():
        results[name] = trainer.finish_run(
            runs[name],
            unstack_state(state, i),
            step,
            logs[name],
            dirs[name],
            train_steps_per_sec=steps_per_sec,
            start_time=start_time,
            extra=extra,
        )
    if failed:
        raise RuntimeError(
            f'{len(failed)} of {len(names)} models failed (the others finished): '
            + '; '.join(f'{dirs[n]}: {msg}' for n, msg in failed.items())
        )
    return results
