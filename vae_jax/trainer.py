"""The training loop: the only owner of files, logs, checkpoints and the progress bar.

Data flow (DESIGN.md): validate config -> load data once as numpy -> put the train split on the
device(s) -> build model, optimizer, TrainState -> restore the latest checkpoint if any -> loop over
chunks (one jitted call runs several optimizer steps) -> metrics leave the device once per chunk ->
eval, pictures and checkpoints at their cadences and always at the end -> eval.json + summary line.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import signal
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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_jax import config_validation, data, distributions, evaluation, models, optim, plots, steps

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
EVAL_FILE = 'eval.json'


class Run:
    """Everything built from a config for one workdir: data, model, keys, jitted functions."""

    def __init__(self, config: ml_collections.ConfigDict):
        config_validation.validate(config)
        self.config = config
        self.train_data, self.test_data = data.get_datasets(config.input)
        if config.input.binarize == 'none':
            distributions.check_support(config.model.likelihood, self.train_data['image'])
        self.data_shape = tuple(self.train_data['image'].shape[1:])
        num_train = self.train_data['image'].shape[0]
        if config.input.batch_size > num_train:
            raise ValueError(
                f'config.input.batch_size={config.input.batch_size} is larger than the '
                f'{num_train} training examples of {config.input.dataset!r}; '
                f'allowed: <= {num_train}'
            )
        self.steps_per_epoch = num_train // config.input.batch_size
        self.static = steps.StepConfig.from_config(config, self.data_shape)
        self.model = models.create_model(config.model, self.data_shape, config.objective)
        root = jax.random.key(config.seed)
        self.init_key, self.loop_key, self.data_key, self.eval_key = jax.random.split(root, 4)
        self.tx = optim.create_optimizer(
            config.optim,
            steps_per_epoch=self.steps_per_epoch,
            num_train_steps=config.num_train_steps,
        )
        self.bind_fn = steps.make_bind_fn(self.model.apply, self.static)
        self.mesh = Mesh(np.array(jax.devices()), ('data',))
        num_devices = self.mesh.size
        if config.input.batch_size % num_devices:
            raise ValueError(
                f'config.input.batch_size={config.input.batch_size} must be divisible by the '
                f'number of devices ({num_devices}) for data-parallel training'
            )
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P('data')) if num_devices > 1 else None

    def create_train_state(self) -> steps.TrainState:
        """Initialises parameters (and BatchNorm statistics) from `init_key`."""
        x = jnp.zeros(self.data_shape, jnp.float32)
        y = jnp.zeros((), jnp.int32) if self.config.model.use_labels else None
        variables = self.model.init(self.init_key, x, y, train=False)
        state = steps.TrainState.create(
            apply_fn=self.model.apply,
            params=variables['params'],
            tx=self.tx,
            batch_stats=variables.get('batch_stats', {}),
        )
        # An int32 array step keeps the scan carry's type fixed across calls.
        state = state.replace(step=jnp.zeros((), jnp.int32))
        return jax.device_put(state, self.replicated)

    @functools.cached_property
    def chunk_fn(self) -> Callable[..., Any]:
        """The jitted multi-step call; one compile per distinct `num_steps`."""
        fn = functools.partial(
            steps.train_chunk,
            batch_size=self.config.input.batch_size,
            loop=self.config.loop,
            static=self.static,
            batch_sharding=self.batch_sharding,
        )
        return jax.jit(fn, static_argnames=('num_steps',), donate_argnums=(0, 1))

    @functools.cached_property
    def permutation_fn(self) -> Callable[[jax.Array], jax.Array]:
        num = self.train_data['image'].shape[0]
        return jax.jit(lambda epoch: steps.epoch_permutation(self.data_key, epoch, num))

    def variables(self, state: steps.TrainState) -> dict[str, Any]:
        variables = {'params': state.params}
        if state.batch_stats:
            variables['batch_stats'] = state.batch_stats
        return variables

    def evaluate(self, state: steps.TrainState, *, nll_k: int = 0) -> dict[str, Any]:
        """Test-split metrics with the fixed eval key (comparable across steps and runs)."""
        images, labels = self.eval_split()
        return evaluation.evaluate_dataset(
            self.eval_key,
            images,
            labels,
            self.bind_fn,
            self.variables(state),
            k_list=tuple(self.config.eval_k_samples),
            nll_k=nll_k,
            batch_size=self.config.input.eval_batch_size,
            dynamic_binarize=self.static.dynamic_binarize,
        )

    def eval_split(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.config.num_eval_examples
        images, labels = self.test_data['image'], self.test_data['label']
        return (images[:n], labels[:n]) if n else (images, labels)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray | jax.Array):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f'cannot serialise {type(value).__name__} to JSON')


def _scalar_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        f'{prefix}/{k}': float(v) for k, v in metrics.items() if v is not None and np.ndim(v) == 0
    }


def prepare_workdir(workdir: Path, config: ml_collections.ConfigDict, *, overwrite: bool) -> None:
    """Creates the workdir, checks it is writable, and refuses a run of a different config.

    Raises:
      PermissionError: the workdir cannot be created or written.
      ValueError: the workdir holds a run of a different config and `overwrite` is False.
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / '.write_test'
        probe.write_text('ok')
        probe.unlink()
    except OSError as e:
        raise PermissionError(
            f'workdir {str(workdir)!r} cannot be written ({e.strerror}); pass a writable --workdir'
        ) from e
    config_path = workdir / CONFIG_FILE
    new = json.loads(config.to_json_best_effort())
    if config_path.exists():
        old = json.loads(config_path.read_text())
        if old != new:
            if not overwrite:
                diff = _config_diff(old, new)
                raise ValueError(
                    f'workdir {str(workdir)!r} holds a run of a different config '
                    f'(differs in: {diff}); use another --workdir, or pass --overwrite to '
                    'delete that run and start again'
                )
            for name in ('checkpoints', 'images', METRICS_FILE, EVAL_FILE):
                path = workdir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            for path in workdir.glob('events.out.tfevents.*'):
                path.unlink()
    config_path.write_text(json.dumps(new, indent=2, sort_keys=True))


def _config_diff(old: dict, new: dict, prefix: str = '') -> str:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k, '<missing>'), new.get(k, '<missing>')
        if isinstance(a, dict) and isinstance(b, dict):
            sub = _config_diff(a, b, f'{prefix}{k}.')
            if sub:
                out.append(sub)
        elif a != b:
            out.append(f'{prefix}{k}: {a!r} -> {b!r}')
    return ', '.join(out)


def checkpoint_manager(workdir: Path, keep: int) -> ocp.CheckpointManager:
    """Orbax manager; a step becomes visible only once fully written (atomic rename)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager((workdir / 'checkpoints').resolve(), options=options)


def restore_latest(
    manager: ocp.CheckpointManager, state: steps.TrainState
) -> tuple[steps.TrainState, int | None]:
    """Restores the newest complete checkpoint into `state`'s structure, if there is one.

    Raises:
      RuntimeError: the newest checkpoint cannot be read (names the directory and what to do).
    """
    step = manager.latest_step()
    if step is None:
        return state, None
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(state))
    except Exception as e:  # Orbax raises several types for damaged files.
        raise RuntimeError(
            f'checkpoint {manager.directory / str(step)} could not be restored '
            f'({type(e).__name__}: {e}); delete that directory to resume from the one before it'
        ) from e
    return restored, step


class _MetricsLog:
    """metrics.jsonl (one JSON object per log step) plus TensorBoard scalars."""

    def __init__(self, workdir: Path, resume_step: int):
        self.path = workdir / METRICS_FILE
        rows = []
        if self.path.exists():
            # Drop rows written after the checkpoint we resume from (a killed run may have logged
            # past its last checkpoint); the resumed run writes them again, identically.
            for line in self.path.read_text().splitlines():
                if line.strip() and json.loads(line)['step'] <= resume_step:
                    rows.append(line)
        self.path.write_text(''.join(r + '\n' for r in rows))
        import tensorboardX  # Imported here: only the trainer writes event files.

        self.tb = tensorboardX.SummaryWriter(str(workdir))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open('a') as f:
            f.write(json.dumps({'step': step, **metrics}, default=_json_default) + '\n')
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.tb.add_image(tag, image, step, dataformats='HWC')
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


class _StopSignal:
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


def _next_boundary(step: int, config: ml_collections.ConfigDict, stop_at: int | None = None) -> int:
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
) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir` and evaluates it on the test split.

    Args:
      config: the experiment config (see configs/default.py).
      workdir: where config.json, metrics.jsonl, TensorBoard events, checkpoints/, images/ and
        eval.json are written.
      overwrite: delete a run of a different config found in `workdir` instead of refusing.
      stop_at_step: stop this invocation at that step, saving a
        checkpoint; a later call resumes. For time-boxed sessions and resume tests.

    Returns:
      The final evaluation (the contents of eval.json), or {'step': ...} when stopped early.
    """
    start_time = time.time()
    workdir = Path(workdir)
    run = Run(config)
    prepare_workdir(workdir, config, overwrite=overwrite)

    manager = checkpoint_manager(workdir, config.keep_checkpoints)
    state, restored_step = restore_latest(manager, run.create_train_state())
    step = int(state.step)
    eval_path = workdir / EVAL_FILE
    if step >= config.num_train_steps and eval_path.exists():
        result = json.loads(eval_path.read_text())
        if result.get('step') == step:
            print(
                f'{workdir}: run already finished at step {step}; '
                f'test ELBO {result.get("elbo", float("nan")):.4f} (see {eval_path})'
            )
            return result
    log = _MetricsLog(workdir, step)
    if restored_step is not None:
        print(f'{workdir}: resuming from checkpoint at step {restored_step}')

    train_images = jax.device_put(run.train_data['image'], run.replicated)
    train_labels = jax.device_put(run.train_data['label'], run.replicated)
    beta = jnp.asarray(config.beta, jnp.float32)
    perm_epoch = jax.device_put(jnp.asarray(step // run.steps_per_epoch, jnp.int32), run.replicated)
    perm = jax.device_put(run.permutation_fn(perm_epoch), run.replicated)
    compiled: set[int] = set()  # chunk lengths already compiled: their first call is not timed

    sums: dict[str, float] = {}
    window_start, window_time = step, time.time()
    timed_steps, train_time = 0, 0.0
    bar = tqdm.tqdm(
        total=config.num_train_steps, initial=step, desc='train', unit='step', mininterval=1.0
    )
    try:
        with _StopSignal() as stop:
            while step < config.num_train_steps:
                num_steps = min(
                    config.steps_per_call, _next_boundary(step, config, stop_at_step) - step
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
                if num_steps in compiled:
                    train_time += time.time() - t0
                    timed_steps += num_steps
                compiled.add(num_steps)
                step += num_steps
                for k, v in chunk_sums.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                bar.update(num_steps)

                if step % config.log_every_steps == 0 or step == config.num_train_steps:
                    n = step - window_start
                    row = {f'train/{k}': v / n for k, v in sums.items()}
                    row['train/skipped'] = sums.get('skipped', 0.0)  # a count, not a mean
                    _check_finite(row, window_start, step, manager)
                    rate = n / max(time.time() - window_time, 1e-9)
                    log.write(step, {**row, 'train/steps_per_sec': rate})
                    bar.set_postfix(loss=f'{row["train/loss"]:.3f}', steps_per_s=f'{rate:.0f}')
                    sums, window_start, window_time = {}, step, time.time()
                if step % config.eval_every_steps == 0 and step < config.num_train_steps:
                    log.write(step, _scalar_metrics(run.evaluate(state), 'eval'))
                if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
                    _save(manager, step, state)
                if step == stop_at_step and step < config.num_train_steps:
                    _save(manager, step, state)
                    log.close()
                    return {'step': step}
                if stop.received is not None:
                    _save(manager, step, state)
                    bar.close()
                    raise KeyboardInterrupt(
                        f'stopped by signal {stop.received} at step {step}; checkpoint saved, '
                        'rerun the same command to resume'
                    )
        manager.wait_until_finished()
    finally:
        bar.close()

    result = run.evaluate(state)
    log.write(step, _scalar_metrics(result, 'eval'))
    pictures = write_pictures(run, state, workdir / 'images')
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
        # Steps per second of training calls, compilation excluded (None if every call compiled).
        'train_steps_per_sec': timed_steps / train_time if train_time > 0 else None,
        'wall_time_sec': time.time() - start_time,
    }
    eval_path.write_text(json.dumps(result, indent=2, default=_json_default))
    print(
        f'{workdir}: step {step}, test ELBO {result["elbo"]:.4f}, '
        f'{result["train_steps_per_sec"] or 0:.1f} steps/s, '
        f'wall time {result["wall_time_sec"]:.1f} s'
    )
    return result


def _save(manager: ocp.CheckpointManager, step: int, state: steps.TrainState) -> None:
    """Saves `state` at `step` unless that step is already saved; returns once it is on disk."""
    if manager.latest_step() != step:
        manager.save(step, args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()


def _check_finite(row: dict[str, float], start: int, end: int, manager) -> None:
    bad = [k for k, v in row.items() if not math.isfinite(v)]
    if bad:
        last = manager.latest_step()
        raise RuntimeError(
            f'non-finite {", ".join(bad)} between steps {start} and {end}; the last good '
            f'checkpoint is step {last} in {manager.directory}. Lower optim.learning_rate, set '
            'optim.grad_clip_norm, or set skip_nonfinite_updates=True to drop such updates'
        )


def write_pictures(run: Run, state: steps.TrainState, out_dir: Path) -> dict[str, np.ndarray]:
    """Writes the run's pictures as PNG files; returns them as RGB arrays for TensorBoard."""
    out_dir.mkdir(parents=True, exist_ok=True)
    variables = run.variables(state)
    images, labels = run.eval_split()
    pictures = {}
    key = jax.random.fold_in(run.eval_key, 1)
    latent_dim = run.config.model.latent_dim
    if len(run.data_shape) == 3:
        n = min(16, images.shape[0])
        x = images[:n]
        if run.static.dynamic_binarize:
            x = np.asarray(steps.binarize(key, jnp.asarray(x)))
        recon = jax.jit(steps.reconstruct, static_argnums=0)(run.bind_fn, variables, x, labels[:n])
        pictures['reconstructions'] = plots.reconstructions(
            x, np.asarray(recon), out_dir / 'reconstructions.png'
        )
        z = jax.random.normal(key, (64, latent_dim))
        sample_labels = jnp.arange(64, dtype=jnp.int32) % run.config.model.num_classes
        samples = jax.jit(steps.decode_mean, static_argnums=0)(
            run.bind_fn, variables, z, sample_labels
        )
        pictures['samples'] = plots.samples(np.asarray(samples), out_dir / 'samples.png')
    return pictures
