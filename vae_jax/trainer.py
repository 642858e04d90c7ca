"""The training loop: the only owner of files, logs, checkpoints and the progress bar.

The run directory's files are written through vae_jax/run_files.py and vae_jax/checkpoints.py;
the pictures through vae_jax/pictures.py.

Data flow: validate config -> load data once as numpy -> put the train split on the device(s) ->
build model, optimizer, TrainState -> restore the latest checkpoint if any -> loop over chunks
(one jitted call runs several optimizer steps) -> metrics leave the device once per chunk -> eval,
pictures and checkpoints at their cadences and always at the end -> eval.json + summary line.

One loop (`train_models`) trains one run or the N models of a vectorised sweep (vae_jax/sweep.py):
with one model it calls the jitted chunk directly, with several it vmaps the same chunk over a
leading model axis; cadences, stops, resume and failures are decided in that one place, and each
model writes its own run directory. A sweep of one is therefore exactly a single run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from vae_jax import (
    build,
    checkpoints,
    data,
    evaluation,
    run_eval,
    run_files,
    steps,
    streaming,
    trained,
)
from vae_jax import pictures as vae_pictures
from vae_jax import run as run_lib
from vae_jax import writers as vae_writers
from vae_jax.loop_control import (  # noqa: F401 -- re-exported: trainer.StopSignal etc.
    PROGRESS_SECONDS,
    Progress,
    StoppedBySignal,
    StopSignal,
    Throughput,
    agreed_signal,
    next_boundary,
)
from vae_jax.metric_windows import (  # noqa: F401 -- re-exported: trainer.window_row etc.
    add_sums,
    check_finite,
    scalar_metrics,
    window_row,
)
from vae_jax.run_eval import finished_result, format_metric  # noqa: F401 -- re-exported

root_keys = build.root_keys
Run, PER_MODEL_KEYS = run_lib.Run, run_lib.PER_MODEL_KEYS
stack_states, unstack_state = run_lib.stack_states, run_lib.unstack_state
make_vmapped_chunk_fn = run_lib.make_vmapped_chunk_fn


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    model: Any = None,
    *,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    skip_damaged_checkpoints: bool = False,
    allow_unverified_checkpoints: bool = False,
) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir` and evaluates it on the test split.

    Args:
      config: the experiment config (see configs/default.py).
      workdir: where config.json, metrics.jsonl, TensorBoard events, checkpoints/, images/ and
        eval.json are written.
      overwrite: delete a run of a different config found in `workdir` instead of refusing.
      stop_at_step: stop this invocation at that step, saving a
        checkpoint; a later call resumes. For time-boxed sessions and resume tests.
      skip_damaged_checkpoints: if the newest checkpoint cannot be read, move it to
        `<workdir>/damaged_checkpoints/` and resume from the newest one that can.
      allow_unverified_checkpoints: resume from a checkpoint whose checksum is missing (with a
        warning) instead of refusing it.
      model: a Flax module following the model protocol (`models.LatentVariableModel`) to
        train instead of the config's model (the config's model keys are then unused).
        config.json records it (`build.record_model`): by import path and fields where these
        rebuild it, so every entry point rebuilds it; else by name, and then `vae_jax.load`,
        `vae_jax.evaluate` and a resume need it passed again. A resume checks it is the same.

    Returns:
      The final evaluation (the contents of eval.json), or {'step': ...} when stopped early.

    Raises:
      ValueError: a bad config or data (naming the key, the value and what is allowed), or a
        workdir holding a run of a different config, or a resume with another `model`.
      PermissionError: the workdir cannot be written.
      run_files.WorkdirLocked: another process trains in `workdir` (nothing was changed).
      checkpoints.CheckpointSaveError: a checkpoint could not be written (disk full, ...).
      build.ModelNotRebuildable: a resume without `model` of a run that trained a model passed
        from Python which its directory cannot rebuild (nothing was changed).
      RuntimeError: a damaged checkpoint, or a non-finite loss or state (the last good
        checkpoint is kept, and what was seen is written to `<workdir>/nonfinite.json`).
      StoppedBySignal: SIGINT/SIGTERM; a checkpoint was saved at the step reached.
    """
    start_time = time.time()
    workdir = Path(workdir)
    # A model from Python into config.json, or the run's recorded one; checked before any file.
    config = build.run_model_config(config, model, workdir)
    config = data.record_data_facts(config)  # npz / tfds: shapes into config.json (a copy).
    results = train_models(
        {'': Run(config, model)},
        {'': workdir},
        overwrite=overwrite,
        stop_at_step=stop_at_step,
        skip_damaged_checkpoints=skip_damaged_checkpoints,
        allow_unverified_checkpoints=allow_unverified_checkpoints,
        start_time=start_time,
    )
    return results['']


def train_models(
    runs: dict[str, Run],
    dirs: dict[str, Path],
    *,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    skip_damaged_checkpoints: bool = False,
    allow_unverified_checkpoints: bool = False,
    start_time: float | None = None,
    extra: dict[str, Any] | None = None,
    tracker_root: Path | None = None,
    make_chunk_fn: Callable[[list[Run]], Callable[..., Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The training loop: trains (or resumes) N models with shared data and cadences.

    Each model has its own Run (`Run.for_config`: the same data and model, its own seed and
    beta) and its own run directory, locked for the whole call. With one model the jitted chunk
    is called directly; with several, one call runs it vmapped over a leading model axis.

    Resume: every model saves its own checkpoints; a rerun restores each unfinished model at the
    newest step that all of them have saved (normally the newest), finished ones are skipped. A
    model whose loss turns non-finite stops the call when it is the only one; among several it is
    reported and dropped (its directory keeps its last good checkpoint), the others finish, then
    `RuntimeError` names the failures.

    Args:
      runs: {name: Run}; `runs` share everything but `PER_MODEL_KEYS`.
      dirs: {name: run directory}.
      overwrite, stop_at_step, skip_damaged_checkpoints, allow_unverified_checkpoints: as in
        `train_and_evaluate`.
      start_time: `time.time()` at the program's start (for eval.json's 'wall_time_sec').
      extra: more entries for every model's eval.json.
      tracker_root: the directory whose MLflow store and W&B group the models share (a sweep's
        directory); None: each run directory (vae_jax/writers.py).
      make_chunk_fn: with several models, builds the vmapped call from the runs of the models
        still training (in the stacked state's order) instead of `make_vmapped_chunk_fn(base)`;
        same signature. For models that differ in more than `PER_MODEL_KEYS`
        (`vae_jax/k_sweep.py`).

    Returns:
      {name: eval.json contents} ({'step': ...} for each model when stopped early).
    """
    start_time = time.time() if start_time is None else start_time
    names = list(runs)
    base = runs[names[0]]
    config = base.config
    if len(names) > 1 and base.pipeline == 'stream':
        raise ValueError(
            f'config.input.pipeline={config.input.pipeline!r} streams the training data, but a '
            'vectorised sweep (config.sweep.*) trains on the data held on the device; allowed: '
            "input.pipeline='device', or separate runs"
        )
    with contextlib.ExitStack() as stack:
        for name in names:  # Before anything is written: a refused start changes nothing.
            stack.enter_context(run_files.WorkdirLock(dirs[name]))
        managers: dict[str, ocp.CheckpointManager] = {}
        stack.callback(lambda: [checkpoints.close(m) for m in managers.values()])
        results: dict[str, dict[str, Any]] = {}
        for name in names:
            run_files.prepare_workdir(dirs[name], runs[name].config, overwrite=overwrite)
            managers[name] = checkpoints.checkpoint_manager(dirs[name], config.keep_checkpoints)
            if skip_damaged_checkpoints:  # Moves damaged newest checkpoints aside.
                fresh = runs[name].create_train_state()
                checkpoints.restore_latest(
                    managers[name],
                    fresh,
                    skip_damaged=True,
                    allow_unverified=allow_unverified_checkpoints,
                )
            done = finished_result(dirs[name], runs[name].config, managers[name].latest_step() or 0)
            if done is not None:
                results[name] = done
        active = [name for name in names if name not in results]
        if not active:
            return results
        restored_step = _common_step([managers[n] for n in active])
        states = [
            _restore(
                managers[n],
                runs[n].create_train_state(),
                restored_step,
                allow_unverified_checkpoints,
            )
            for n in active
        ]
        step = int(states[0].step)
        if restored_step is not None:
            where = dirs[active[0]] if len(active) == 1 else f'{len(active)} models'
            print(f'{where}: resuming from checkpoint at step {step}')
        logs = {
            n: run_files.MetricsLog(
                dirs[n],
                step,
                final_step=config.num_train_steps,
                writers=vae_writers.open_writers(runs[n].config, dirs[n], step, root=tracker_root),
            )
            for n in active
        }
        # Tracker runs left open by an exception are marked failed (closing twice is a no-op).
        stack.callback(lambda: [log.close('failed') for log in logs.values()])
        vectorised = len(active) > 1
        if base.pipeline == 'stream':  # The reader below reads each step's rows (streaming.py).
            train_images = train_labels = None
        else:  # Sharded along examples over several devices (vae_jax/sharded_data.py).
            train_images, train_labels = base.device_split()
        epoch = jnp.asarray(step // base.steps_per_epoch, jnp.int32)
        if vectorised:
            state = jax.device_put(stack_states(states), base.replicated)
            if make_chunk_fn is None:
                chunk_fn = make_vmapped_chunk_fn(base)
            else:
                chunk_fn = make_chunk_fn([runs[n] for n in active])
            # Committed to the chunk outputs' sharding, so the second call hits the first's compile.
            loop_keys, data_keys, betas, perm_epoch = jax.device_put(
                (
                    jnp.stack([runs[n].loop_key for n in active]),
                    jnp.stack([runs[n].data_key for n in active]),
                    jnp.asarray([runs[n].config.beta for n in active], jnp.float32),
                    epoch,
                ),
                base.replicated,
            )
            num_examples = base.num_train
            permutations = jax.vmap(steps.epoch_permutation, in_axes=(0, None, None))
            perm = jax.jit(permutations, static_argnums=2)(data_keys, perm_epoch, num_examples)
            perm = jax.device_put(perm, base.replicated)
        else:
            state, run = states[0], runs[active[0]]
            chunk_fn = run.chunk_fn
            loop_keys, data_keys = run.loop_key, run.data_key
            betas = jnp.asarray(run.config.beta, jnp.float32)
            perm_epoch = jax.device_put(epoch, base.replicated)
            if run.pipeline == 'stream':
                # Reads from `step` on: a resumed run reads what an uninterrupted one reads.
                chunk_fn = stack.enter_context(streaming.StreamedChunks(run, step))
                perm = perm_epoch  # Unused: the reader follows the epoch permutations itself.
            else:
                perm = jax.device_put(run.permutation_fn(perm_epoch), base.replicated)
        del states

        def state_of(state: steps.TrainState, i: int) -> steps.TrainState:
            return unstack_state(state, i) if vectorised else state

        def to_host(v: Any) -> np.ndarray:  # Chunk sums as float64 [N], one per model.
            v = np.asarray(v, np.float64)
            return v if vectorised else v[None]

        throughput = Throughput()
        sums, window_start = _restore_windows([dirs[n] for n in active], step)
        window_time = time.time()
        failed: dict[str, str] = {}
        desc = 'train' if len(active) == 1 else f'train {len(active)} models'
        progress = Progress(config.num_train_steps, step, desc)
        stack.callback(progress.close)

        def live():
            return [(i, n) for i, n in enumerate(active) if n not in failed]

        def fail(name: str, error: RuntimeError) -> None:
            if len(active) == 1:
                raise error
            # Among several models, drop this one and go on with the others.
            failed[name] = str(error)
            print(f'{dirs[name]}: FAILED, dropped from the sweep: {error}')
            logs[name].close('failed')

        with StopSignal() as stop:
            while step < config.num_train_steps and live():
                num_steps = min(
                    config.steps_per_call, next_boundary(step, config, stop_at_step) - step
                )
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
                add_sums(sums, chunk_sums, to_host)
                shown = None

                if step % config.log_every_steps == 0 or step == config.num_train_steps:
                    rate = (step - window_start) / max(time.time() - window_time, 1e-9)
                    for i, name in live():
                        row = window_row(_model_sums(sums, i), step - window_start)
                        # Written even when non-finite: the record of where the model diverged.
                        logs[name].write(step, {**row, 'train/steps_per_sec': rate})
                        shown = shown or row
                        try:
                            check_finite(row, window_start, step, managers[name])
                        except RuntimeError as e:
                            fail(name, e)
                    sums, window_start, window_time = {}, step, time.time()
                progress.update(step, num_steps, shown, throughput.steps_per_sec or 0.0)
                if step % config.eval_every_steps == 0 and step < config.num_train_steps:
                    for i, name in live():
                        metrics, _ = runs[name].evaluate(state_of(state, i))
                        logs[name].write(step, scalar_metrics(metrics, 'eval'))
                signum = agreed_signal(stop)
                stopping = signum is not None or (
                    step == stop_at_step and step < config.num_train_steps
                )
                save = step % config.checkpoint_every_steps == 0 or step == config.num_train_steps
                for i, name in live():
                    try:
                        model_sums = _model_sums(sums, i)
                        if stopping and model_sums:
                            # Between log steps: check the partial window, and keep its sums so
                            # that the resumed run logs the same row as an uninterrupted one.
                            row = window_row(model_sums, step - window_start)
                            check_finite(row, window_start, step, managers[name])
                        if save or stopping:
                            _save(managers[name], step, state_of(state, i))
                        if stopping:
                            run_files.save_window(dirs[name], step, window_start, model_sums)
                            logs[name].close('stopped')
                    except RuntimeError as e:
                        fail(name, e)
                if stopping:
                    if signum is not None:
                        raise StoppedBySignal(signum, step)
                    return {name: {'step': step} for name in active}
        progress.close()
        for manager in managers.values():  # Training is over; finish_run saves nothing.
            checkpoints.close(manager)
        managers.clear()
        for i, name in live():
            results[name] = finish_run(
                runs[name],
                state_of(state, i),
                step,
                logs[name],
                dirs[name],
                # Steps/s of the training calls, compilation excluded unless all compiled.
                train_steps_per_sec=throughput.steps_per_sec,
                extra={
                    **(extra or {}),
                    **(
                        {'train_steps_per_sec_note': 'includes compilation (every call compiled)'}
                        if throughput.includes_compilation
                        else {}
                    ),
                },
                start_time=start_time,
            )
    if failed:
        raise RuntimeError(
            f'{len(failed)} of {len(names)} models failed (the others finished): '
            + '; '.join(f'{dirs[n]}: {msg}' for n, msg in failed.items())
        )
    return results


def _common_step(managers: list[ocp.CheckpointManager]) -> int | None:
    """The newest step that every manager has saved, or None."""
    common = None
    for manager in managers:
        saved = set(manager.all_steps())
        common = saved if common is None else common & saved
    return max(common) if common else None


def _restore(
    manager: ocp.CheckpointManager,
    state: steps.TrainState,
    step: int | None,
    allow_unverified: bool = False,
):
    """The checkpoint at `step` (None: `state` itself); the newest one is checksum-verified."""
    if step is None:
        return state
    if step == manager.latest_step():
        return checkpoints.restore_latest(manager, state, allow_unverified=allow_unverified)[0]
    return checkpoints.restore_step(manager, step, state)


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


def write_pictures(
    run: Run, state: steps.TrainState, step: int, workdir: Path, per_example: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The run's pictures into `<workdir>/images` (`pictures.write_pictures`), for any model."""
    images, labels = run.eval_split()
    return vae_pictures.write_pictures(
        workdir / 'images',
        trained.TrainedModel(run.parts, run.variables(state), step),
        run.eval_key,
        vae_pictures.picture_rows(images, run.input_spec),
        labels,
        **vae_pictures.config_options(run.config),
        posterior_means=vae_pictures.posterior_means(per_example),
        metrics_path=workdir / run_files.METRICS_FILE,
    )


def disentanglement_scores(
    run: Run, state: steps.TrainState, step: int, workdir: Path
) -> dict[str, Any]:
    """The disentanglement metrics of a run on a data set with factors (`run_eval`).

    A run they do not apply to (a conditional one) gets 'disentanglement/skipped' with the
    reason, and a logged warning: the metrics must not cost a trained run its eval.json.
    """
    try:
        return run_eval.disentanglement(trained.TrainedModel(run.parts, run.variables(state), step))
    except ValueError as e:
        logging.warning('%s: disentanglement metrics skipped: %s', workdir, e)
        print(f'{workdir}: disentanglement metrics skipped: {e}')
        return {'disentanglement/skipped': str(e)}


def finish_run(
    run: Run,
    state: steps.TrainState,
    step: int,
    log: run_files.MetricsLog,
    workdir: Path,
    *,
    train_steps_per_sec: float | None,
    start_time: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The end of a run: test evaluation, pictures, eval.json and the summary line.

    Pictures never fail a trained run: one that cannot be drawn is a logged warning, and
    eval.json is written regardless.

    Args:
      run, state, step: the run and its final state.
      log: the run's metrics log; closed here.
      workdir: the run directory.
      train_steps_per_sec: training speed to record (None if unknown).
      start_time: `time.time()` at the start of the program (for 'wall_time_sec').
      extra: more entries for eval.json (e.g. the vectorised sweep's description).

    Returns:
      The contents of eval.json (`run_eval.record`, plus the training's speed and wall time).
    """
    config = run.config
    eval_start = time.time()
    metrics, per_example = run.evaluate(state)
    eval_time = time.time() - eval_start
    scores = {}
    if config.input.dataset in data.FACTOR_DATASETS:
        scores = disentanglement_scores(run, state, step, workdir)
    scalars = {k: v for k, v in scores.items() if isinstance(v, float)}
    log.write(step, scalar_metrics({**metrics, **scalars}, 'eval'))
    primary = jax.process_index() == 0  # With several processes, process 0 writes the files.
    pictures = {}
    if primary:
        try:
            pictures = write_pictures(run, state, step, workdir, per_example)
        except Exception as e:  # noqa: BLE001 (pictures must not cost the trained run)
            logging.warning('%s: pictures not drawn: %s: %s', workdir, type(e).__name__, e)
    for name, image in pictures.items():
        log.image(f'images/{name}', image, step)
    result = {
        **run_eval.record(
            config,
            step,
            {**metrics, **scores},
            split='test',
            nll_k=0,
            chunk_size=evaluation.CHUNK_SIZE,
            batch_size=config.input.eval_batch_size,
            seed=None,
            evaluated_by='vae_jax.train',
            eval_time_sec=eval_time,
        ),
        'train_steps_per_sec': train_steps_per_sec,
        'wall_time_sec': time.time() - start_time,
        **(extra or {}),
    }
    log.summary(result)
    log.close()
    if not primary:
        return result
    run_files.write_json(workdir / run_files.EVAL_FILE, result)
    rate = result['train_steps_per_sec']
    if rate is None:
        speed = 'no training steps in this call'
    else:
        compiling = ' (incl. compilation)' if 'train_steps_per_sec_note' in result else ''
        speed = f'{rate:.1f} steps/s{compiling}'
    print(
        f'{workdir}: step {step}, test ELBO {format_metric(result.get("elbo"))}, {speed}, '
        f'wall time {result["wall_time_sec"]:.1f} s'
    )
    return result
