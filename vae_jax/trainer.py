"""The training loop: the only owner of files, logs, checkpoints and the progress bar.

The run directory's files are written through vae_jax/run_files.py and vae_jax/checkpoints.py;
the pictures through vae_jax/pictures.py.

Data flow (DESIGN.md): validate config -> load data once as numpy -> put the train split on the
device(s) -> build model, optimizer, TrainState -> restore the latest checkpoint if any -> loop over
chunks (one jitted call runs several optimizer steps) -> metrics leave the device once per chunk ->
eval, pictures and checkpoints at their cadences and always at the end -> eval.json + summary line.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_jax import (
    checkpoints,
    config_validation,
    data,
    distributions,
    evaluation,
    models,
    optim,
    run_files,
    steps,
)
from vae_jax import pictures as vae_pictures


def root_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A run's keys from its seed: (init_key, loop_key, data_key, eval_key), typed [] keys."""
    init_key, loop_key, data_key, eval_key = jax.random.split(jax.random.key(seed), 4)
    return init_key, loop_key, data_key, eval_key


# Config keys in which the models of one vectorised sweep (vae_jax/sweep.py) may differ.
PER_MODEL_KEYS = ('seed', 'beta', 'sweep')


# fold_in salt of the held-out objective terms (Run.objective_terms): their own noise.
OBJECTIVE_SALT = 0x4F424A


class Run:
    """Everything built from a config for one workdir: data, model, keys, jitted functions."""

    def __init__(self, config: ml_collections.ConfigDict, model: Any = None):
        """Args: config: the experiment config. model: a Flax module that follows the model
        protocol (`models.LatentVariableModel`) to train instead of the config's model."""
        config_validation.validate(config)
        self.config = config
        self.train_data, self.test_data = data.get_datasets(config.input)
        if config.input.binarize == 'none':
            for split in (self.train_data, self.test_data):
                distributions.check_support(config.model.likelihood, split['image'])
        self.data_shape = tuple(self.train_data['image'].shape[1:])
        num_train = self.train_data['image'].shape[0]
        if config.input.batch_size > num_train:
            raise ValueError(
                f'config.input.batch_size={config.input.batch_size} is larger than the '
                f'{num_train} training examples of {config.input.dataset!r}; '
                f'allowed: <= {num_train}'
            )
        self.steps_per_epoch = num_train // config.input.batch_size
        if model is None:
            self.model = models.create_model(config.model, self.data_shape, config.objective)
        else:
            self.model = models.check_model(
                model, self.data_shape, bool(config.model.use_labels), where='model='
            )
        self.static = steps.StepConfig.from_config(
            config, self.data_shape, self.model, dataset_size=num_train
        )
        self.init_key, self.loop_key, self.data_key, self.eval_key = root_keys(config.seed)
        self.tx = optim.create_optimizer(
            config.optim,
            steps_per_epoch=self.steps_per_epoch,
            num_train_steps=config.num_train_steps,
        )
        # encode/decode closures exist for the layer-spec model only (pictures use them);
        # evaluation goes through the log-weights of any model (`model_fn`) except for the
        # layer-spec model with its default N(0, I) prior, which keeps its analytic-KL path.
        builtin = self.static.latent_shapes is None
        self.bind_fn = steps.make_bind_fn(self.model.apply, self.static) if builtin else None
        self.model_fn = None
        if not builtin or self.static.prior != 'standard_normal':
            self.model_fn = steps.make_model_fn(self.model.apply, self.static)
        self.mesh = Mesh(np.array(jax.devices()), ('data',))
        num_devices = self.mesh.size
        if config.input.batch_size % num_devices:
            raise ValueError(
                f'config.input.batch_size={config.input.batch_size} must be divisible by the '
                f'number of devices ({num_devices}) for data-parallel training; allowed: a '
                f'multiple of {num_devices}'
            )
        # Data parallel, one code path for any number of devices: parameters replicated, each
        # batch split along the mesh's 'data' axis (B / num_devices examples per device).
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P('data'))

    def create_train_state(self) -> steps.TrainState:
        """Initialises parameters (and BatchNorm statistics) from `init_key`."""
        variables = models.init_variables(
            self.model, self.init_key, self.data_shape, bool(self.config.model.use_labels)
        )
        state = steps.TrainState.create(
            apply_fn=self.model.apply,
            params=variables['params'],
            tx=self.tx,
            batch_stats=variables.get('batch_stats', {}),
        )
        # An int32 array step keeps the scan carry's type fixed across calls.
        state = state.replace(step=jnp.zeros((), jnp.int32))
        # Through the host: with several processes, a single-device array cannot be put on
        # other hosts' devices, but every process holds the same host values.
        return jax.device_put(jax.device_get(state), self.replicated)

    @property
    def chunk_body(self) -> Callable[..., Any]:
        """`steps.train_chunk` with this run's static settings, not jitted (the sweep vmaps it)."""
        return functools.partial(
            steps.train_chunk,
            batch_size=self.config.input.batch_size,
            loop=self.config.loop,
            static=self.static,
            batch_sharding=self.batch_sharding,
        )

    @functools.cached_property
    def chunk_fn(self) -> Callable[..., Any]:
        """The jitted multi-step call; one compile per distinct `num_steps`."""
        return jax.jit(
            self.chunk_body,
            static_argnames=('num_steps',),
            donate_argnums=(0, 1),
            compiler_options=steps.compiler_options(),
        )

    @functools.cached_property
    def permutation_fn(self) -> Callable[[jax.Array], jax.Array]:
        num = self.train_data['image'].shape[0]
        return jax.jit(lambda epoch: steps.epoch_permutation(self.data_key, epoch, num))

    def variables(self, state: steps.TrainState) -> dict[str, Any]:
        variables = {'params': state.params}
        if state.batch_stats:
            variables['batch_stats'] = state.batch_stats
        if jax.process_count() > 1:
            # Evaluation then runs on each process's own devices, not as a cross-host program.
            variables = jax.device_get(variables)
        return variables

    def evaluate(
        self, state: steps.TrainState, *, nll_k: int = 0, return_per_example: bool = False
    ) -> dict[str, Any]:
        """Test-split metrics with the fixed eval key (comparable across steps and runs)."""
        images, labels = self.eval_split()
        metrics = evaluation.evaluate_dataset(
            self.eval_key,
            images,
            labels,
            self.bind_fn,
            self.variables(state),
            k_list=tuple(self.config.eval_k_samples),
            nll_k=nll_k,
            batch_size=self.config.input.eval_batch_size,
            dynamic_binarize=self.static.dynamic_binarize,
            return_per_example=return_per_example,
            model_fn=self.model_fn,
        )
        return {**metrics, **self.objective_terms(state, images, labels)}

    def objective_terms(
        self, state: steps.TrainState, images: np.ndarray, labels: np.ndarray
    ) -> dict[str, float]:
        """The training objective's terms on held-out data, in evaluation mode.

        Whatever the objective reports (the ESS of the IWAE family, beta-TCVAE's MI, TC and
        dimension-wise KL, ...), averaged over the examples, in batches of the training batch
        size (beta-TCVAE's estimator depends on it); a last partial batch is left out. The key
        is fold_in(eval_key, OBJECTIVE_SALT), then fold_in(., batch index).

        Returns:
          {'objective/<term>': mean}; empty when the data is smaller than one batch.
        """
        batch = self.config.input.batch_size
        num_batches = images.shape[0] // batch
        if num_batches == 0:
            return {}
        fn = self._objective_terms_fn
        key = jax.random.fold_in(self.eval_key, OBJECTIVE_SALT)
        sums: dict[str, float] = {}
        for i in range(num_batches):
            rows = slice(i * batch, (i + 1) * batch)
            terms = jax.device_get(
                fn(
                    state.params,
                    state.batch_stats,
                    jax.random.fold_in(key, i),
                    jnp.asarray(images[rows], jnp.float32),
                    jnp.asarray(labels[rows], jnp.int32),
                    jnp.asarray(self.config.beta, jnp.float32),
                )
            )
            for name, values in terms.items():
                sums[name] = sums.get(name, 0.0) + float(np.sum(values, dtype=np.float64))
        count = num_batches * batch
        return {f'objective/{name}': total / count for name, total in sums.items()}

    @functools.cached_property
    def _objective_terms_fn(self) -> Callable[..., Any]:
        return jax.jit(
            lambda params, stats, key, images, labels, beta: steps.batch_terms(
                params,
                stats,
                key,
                images,
                labels,
                beta,
                apply_fn=self.model.apply,
                static=self.static,
                train=False,
            )[0]
        )

    def eval_split(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.config.num_eval_examples
        images, labels = self.test_data['image'], self.test_data['label']
        return (images[:n], labels[:n]) if n else (images, labels)

    def for_config(self, config: ml_collections.ConfigDict) -> Run:
        """This run with another `seed` / `beta` (the models of a vectorised sweep).

        Shares the loaded data, model, optimizer, mesh and `bind_fn` (so evaluation compiles once
        for all models); takes the keys of `config.seed` and drops compiled functions that close
        over the old keys.

        Raises:
          ValueError: `config` differs from this run's config in more than `PER_MODEL_KEYS`.
        """
        config_validation.validate(config)
        old, new = (json.loads(c.to_json_best_effort()) for c in (self.config, config))
        for key in PER_MODEL_KEYS:
            old.pop(key, None)
            new.pop(key, None)
        if old != new:
            raise ValueError(
                f'the models of one run may differ only in {", ".join(PER_MODEL_KEYS)}; '
                f'these differ too: {run_files.config_diff(old, new)}'
            )
        run = copy.copy(self)
        for name, attr in vars(Run).items():  # cached properties live in the instance dict
            if isinstance(attr, functools.cached_property):
                run.__dict__.pop(name, None)
        run.config = config
        run.init_key, run.loop_key, run.data_key, run.eval_key = root_keys(config.seed)
        return run


def scalar_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """The scalar entries as '{prefix}/{name}'; a dict of scalars (e.g. active units per
    stochastic layer) as '{prefix}/{name}/{key}'; lists and None are left out."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            for name, inner in v.items():
                if inner is not None and not isinstance(inner, dict) and np.ndim(inner) == 0:
                    out[f'{prefix}/{k}/{name}'] = float(inner)
        elif v is not None and np.ndim(v) == 0:
            out[f'{prefix}/{k}'] = float(v)
    return out


class StoppedBySignal(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; rerun to resume."""

    def __init__(self, signum: int, step: int):
        super().__init__(
            f'stopped by signal {signum} ({signal.Signals(signum).name}) at step {step}; '
            'checkpoint saved, rerun the same command to resume'
        )
        self.signum = signum
        self.step = step


class Throughput:
    """Steps per second of the training calls, leaving out each chunk length's first call.

    The first call of a chunk length compiles it, so its time is not training time.
    """

    def __init__(self):
        self._compiled: set[int] = set()
        self._steps, self._seconds = 0, 0.0

    def record(self, num_steps: int, seconds: float) -> None:
        if num_steps in self._compiled:
            self._steps += num_steps
            self._seconds += seconds
        self._compiled.add(num_steps)

    @property
    def steps_per_sec(self) -> float | None:
        """None while every call has compiled."""
        return self._steps / self._seconds if self._seconds > 0 else None


def add_sums(sums: dict[str, Any], chunk_sums: dict[str, Any], convert: Callable) -> None:
    """Adds one call's metric sums (host arrays) into `sums`, in place, through `convert`."""
    for k, v in chunk_sums.items():
        sums[k] = sums.get(k, 0.0) + convert(v)


class StopSignal:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the chunk and exits."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # Not the main thread: leave signals alone.
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        if self.received is not None:  # A second signal: stop now.
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def next_boundary(step: int, config: ml_collections.ConfigDict, stop_at: int | None = None) -> int:
    """The next step at which something happens (log, eval, checkpoint or the end)."""
    out = config.num_train_steps
    for every in (config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps):
        out = min(out, (step // every + 1) * every)
    return out if stop_at is None or stop_at <= step else min(out, stop_at)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    skip_damaged_checkpoints: bool = False,
    model: Any = None,
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
      model: a Flax module following the model protocol (`models.LatentVariableModel`) to
        train instead of the config's model (the config's model keys are then unused; the run
        directory does not record the module, so resuming needs the same `model=`).

    Returns:
      The final evaluation (the contents of eval.json), or {'step': ...} when stopped early.

    Raises:
      ValueError: a bad config or data (naming the key, the value and what is allowed), or a
        workdir holding a run of a different config.
      PermissionError: the workdir cannot be written.
      RuntimeError: a damaged checkpoint, or a non-finite loss or state (the last good
        checkpoint is kept, and what was seen is written to `<workdir>/nonfinite.json`).
      StoppedBySignal: SIGINT/SIGTERM; a checkpoint was saved at the step reached.
    """
    start_time = time.time()
    workdir = Path(workdir)
    run = Run(config, model=model)
    run_files.prepare_workdir(workdir, config, overwrite=overwrite)

    manager = checkpoints.checkpoint_manager(workdir, config.keep_checkpoints)
    try:
        state, restored_step = checkpoints.restore_latest(
            manager, run.create_train_state(), skip_damaged=skip_damaged_checkpoints
        )
    except BaseException:
        manager.close()  # A refused restore leaves no background threads behind.
        raise
    step = int(state.step)
    result = finished_result(workdir, config, step)
    if result is not None:
        manager.close()
        return result
    log = run_files.MetricsLog(workdir, step, final_step=config.num_train_steps)
    if restored_step is not None:
        print(f'{workdir}: resuming from checkpoint at step {restored_step}')

    train_images = jax.device_put(run.train_data['image'], run.replicated)
    train_labels = jax.device_put(run.train_data['label'], run.replicated)
    beta = jnp.asarray(config.beta, jnp.float32)
    perm_epoch = jax.device_put(jnp.asarray(step // run.steps_per_epoch, jnp.int32), run.replicated)
    perm = jax.device_put(run.permutation_fn(perm_epoch), run.replicated)
    throughput = Throughput()
    sums, window_start = run_files.restore_window(workdir, step)
    window_time = time.time()
    bar = tqdm.tqdm(
        total=config.num_train_steps, initial=step, desc='train', unit='step', mininterval=1.0
    )
    try:
        with StopSignal() as stop:
            while step < config.num_train_steps:
                num_steps = min(
                    config.steps_per_call, next_boundary(step, config, stop_at_step) - step
                )
                t0 = time.time()
                state, perm, perm_epoch, chunk_sums = run.chunk_fn(
                    state,
                    perm,
                    perm_epoch,
                    train_images,
                    train_labels,
                    run.loop_key,
                    run.data_key,
                    beta,
                    num_steps=num_steps,
                )
                chunk_sums = jax.device_get(chunk_sums)  # The one host sync per chunk.
                throughput.record(num_steps, time.time() - t0)
                step += num_steps
                add_sums(sums, chunk_sums, float)
                bar.update(num_steps)

                if step % config.log_every_steps == 0 or step == config.num_train_steps:
                    row = window_row(sums, step - window_start)
                    rate = (step - window_start) / max(time.time() - window_time, 1e-9)
                    # Written even when non-finite: the record of where the run diverged.
                    log.write(step, {**row, 'train/steps_per_sec': rate})
                    check_finite(row, window_start, step, manager)
                    bar.set_postfix(loss=f'{row["train/loss"]:.3f}', steps_per_s=f'{rate:.0f}')
                    sums, window_start, window_time = {}, step, time.time()
                if step % config.eval_every_steps == 0 and step < config.num_train_steps:
                    log.write(step, scalar_metrics(run.evaluate(state), 'eval'))
                if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
                    checkpoints.save(manager, step, state)
                signum = agreed_signal(stop)
                if signum is not None or (step == stop_at_step and step < config.num_train_steps):
                    # Between log steps: check the partial window, and keep its sums so that
                    # the resumed run logs the same row as an uninterrupted one.
                    if sums:
                        row = window_row(sums, step - window_start)
                        check_finite(row, window_start, step, manager)
                    checkpoints.save(manager, step, state)
                    run_files.save_window(workdir, step, window_start, sums)
                    log.close()
                    if signum is not None:
                        raise StoppedBySignal(signum, step)
                    return {'step': step}
        manager.wait_until_finished()
    finally:
        bar.close()
        manager.close()  # Training is over however it ended; finish_run saves nothing.

    return finish_run(
        run,
        state,
        step,
        log,
        workdir,
        # Steps per second of training calls, compilation excluded (None if every call compiled).
        train_steps_per_sec=throughput.steps_per_sec,
        start_time=start_time,
    )


def finished_result(
    workdir: Path, config: ml_collections.ConfigDict, step: int
) -> dict[str, Any] | None:
    """The eval.json of a run that is finished at `step` (and says so), else None."""
    eval_path = workdir / run_files.EVAL_FILE
    if step >= config.num_train_steps and eval_path.exists():
        result = json.loads(eval_path.read_text())
        if result.get('step') == step:
            print(
                f'{workdir}: run already finished at step {step}; '
                f'test ELBO {format_metric(result.get("elbo"))} (see {eval_path})'
            )
            return result
    return None


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

    Args:
      run, state, step: the run and its final state.
      log: the run's metrics log; closed here.
      workdir: the run directory.
      train_steps_per_sec: training speed to record (None if unknown).
      start_time: `time.time()` at the start of the program (for 'wall_time_sec').
      extra: more entries for eval.json (e.g. the vectorised sweep's description).

    Returns:
      The contents of eval.json.
    """
    config = run.config
    result = run.evaluate(state, return_per_example=True)
    per_example = result.pop('per_example')
    log.write(step, scalar_metrics(result, 'eval'))
    primary = jax.process_index() == 0  # With several processes, process 0 writes the files.
    pictures = {}
    if primary and run.bind_fn is not None:  # pictures need the layer-spec model's decoder
        pictures = vae_pictures.write_pictures(
            run,
            state,
            workdir / 'images',
            posterior_means=per_example['posterior_mean'],
            labels=run.eval_split()[1],
            metrics_path=workdir / run_files.METRICS_FILE,
        )
    for name, image in pictures.items():
        log.image(f'images/{name}', image, step)
    log.close()
    result = {
        'step': step,
        'split': 'test',
        'num_examples': int(run.eval_split()[0].shape[0]),
        'binarize': config.input.binarize,
        'seed': config.seed,
        'eval_k_samples': list(config.eval_k_samples),
        **result,
        'train_steps_per_sec': train_steps_per_sec,
        'wall_time_sec': time.time() - start_time,
        **(extra or {}),
    }
    if not primary:
        return result
    run_files.write_json(workdir / run_files.EVAL_FILE, result)
    print(
        f'{workdir}: step {step}, test ELBO {format_metric(result.get("elbo"))}, '
        f'{result["train_steps_per_sec"] or 0:.1f} steps/s, '
        f'wall time {result["wall_time_sec"]:.1f} s'
    )
    return result


def format_metric(value: float | None) -> str:
    """A metric for the summary line; None (no ELBO for the autoencoder objective) -> 'n/a'."""
    return 'n/a' if value is None else f'{value:.4f}'


def window_row(sums: dict[str, float], num_steps: int) -> dict[str, float]:
    """A log row from a window's metric sums: means over the updates that were applied.

    Args:
      sums: metric name -> sum over the window's steps (`steps.train_step` zeroes the metrics
        of a skipped step, see `skip_nonfinite_updates`).
      num_steps: steps in the window.

    Returns:
      {'train/<name>': mean over the applied updates (NaN if all were skipped), ...,
       'train/skipped': how many updates were skipped (a count, not a mean)}.
    """
    skipped = sums.get('skipped', 0.0)
    applied = num_steps - skipped
    row = {
        f'train/{k}': v / applied if applied > 0 else math.nan
        for k, v in sums.items()
        if k != 'skipped'
    }
    row['train/skipped'] = skipped
    return row


def agreed_signal(stop: StopSignal) -> int | None:
    """The stop signal any process has received, or None: all processes stop at one step."""
    if jax.process_count() == 1:
        return stop.received
    received = multihost_utils.process_allgather(np.int32(stop.received or 0))
    return int(np.max(received)) or None


def check_finite(row: dict[str, float], start: int, end: int, manager) -> None:
    """Raises RuntimeError (and writes nonfinite.json) if a log row holds NaN or inf."""
    bad = [k for k, v in row.items() if not math.isfinite(v)]
    if bad:
        what = f'non-finite {", ".join(bad)} between steps {start} and {end}'
        if row.get('train/skipped', 0) >= end - start:
            what += f' (all {end - start} updates were non-finite and skipped)'
        raise checkpoints.nonfinite_error(
            manager, what, {'steps': [start, end], 'nonfinite': bad, 'metrics': row}
        )
