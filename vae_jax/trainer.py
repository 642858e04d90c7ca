"""The training loop: the only owner of files, logs, checkpoints and the progress bar.

Data flow (DESIGN.md): validate config -> load data once as numpy -> put the train split on the
device(s) -> build model, optimizer, TrainState -> restore the latest checkpoint if any -> loop over
chunks (one jitted call runs several optimizer steps) -> metrics leave the device once per chunk ->
eval, pictures and checkpoints at their cadences and always at the end -> eval.json + summary line.
"""

from __future__ import annotations

import copy
import functools
import hashlib
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
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_jax import config_validation, data, distributions, evaluation, models, optim, steps
from vae_jax import pictures as vae_pictures

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
EVAL_FILE = 'eval.json'
# What a run saw when its loss became non-finite (the offending metrics row, steps, checkpoint).
NONFINITE_FILE = 'nonfinite.json'
# Metric sums of a log window cut short by a stop between log steps (signal or stop_at_step),
# so that the resumed run logs the same row as an uninterrupted one.
WINDOW_FILE = 'train_window.json'
DAMAGED_DIR = 'damaged_checkpoints'


def root_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A run's keys from its seed: (init_key, loop_key, data_key, eval_key), typed [] keys."""
    init_key, loop_key, data_key, eval_key = jax.random.split(jax.random.key(seed), 4)
    return init_key, loop_key, data_key, eval_key


# Config keys in which the models of one vectorised sweep (vae_jax/sweep.py) may differ.
PER_MODEL_KEYS = ('seed', 'beta', 'sweep')


class Run:
    """Everything built from a config for one workdir: data, model, keys, jitted functions."""

    def __init__(self, config: ml_collections.ConfigDict):
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
        self.static = steps.StepConfig.from_config(config, self.data_shape)
        self.model = models.create_model(config.model, self.data_shape, config.objective)
        self.init_key, self.loop_key, self.data_key, self.eval_key = root_keys(config.seed)
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
                f'number of devices ({num_devices}) for data-parallel training; allowed: a '
                f'multiple of {num_devices}'
            )
        # Data parallel, one code path for any number of devices: parameters replicated, each
        # batch split along the mesh's 'data' axis (B / num_devices examples per device).
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P('data'))

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
        # Through the host: with several processes, a single-device array cannot be put on
        # other hosts' devices, but every process holds the same host values.
        return jax.device_put(jax.device_get(state), self.replicated)

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
        if jax.process_count() > 1:
            # Evaluation then runs on each process's own devices, not as a cross-host program.
            variables = jax.device_get(variables)
        return variables

    def evaluate(
        self, state: steps.TrainState, *, nll_k: int = 0, return_per_example: bool = False
    ) -> dict[str, Any]:
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
            return_per_example=return_per_example,
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
                f'these differ too: {_config_diff(old, new)}'
            )
        run = copy.copy(self)
        for name, attr in vars(Run).items():  # cached properties live in the instance dict
            if isinstance(attr, functools.cached_property):
                run.__dict__.pop(name, None)
        run.config = config
        run.init_key, run.loop_key, run.data_key, run.eval_key = root_keys(config.seed)
        return run


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

    Keys that are unset (None) count as absent, so a config key added to the project later as
    a placeholder does not make older runs unresumable. With several processes, every process
    checks and process 0 writes.

    Raises:
      PermissionError: the workdir cannot be created or written.
      ValueError: the workdir holds a run of a different config and `overwrite` is False, or its
        config.json cannot be read.
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f'.write_test.{jax.process_index()}'
        probe.write_text('ok')
        probe.unlink()
    except OSError as e:
        raise PermissionError(
            f'workdir {str(workdir)!r} cannot be written ({e.strerror}); pass a writable --workdir'
        ) from e
    config_path = workdir / CONFIG_FILE
    new = json.loads(config.to_json_best_effort())
    delete = False
    if config_path.exists():
        try:
            old = json.loads(config_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(
                f'{config_path} cannot be read ({e}); if the run there is not needed, pass '
                '--overwrite to delete it, else restore that file'
            ) from e
        if _drop_unset(old) != _drop_unset(new):
            if not overwrite:
                diff = _config_diff(old, new)
                raise ValueError(
                    f'workdir {str(workdir)!r} holds a run of a different config '
                    f'(differs in: {diff}); use another --workdir, or pass --overwrite to '
                    'delete that run and start again'
                )
            delete = True
    _sync('prepare_workdir_checked')
    if jax.process_index() == 0:
        if delete:
            names = ('checkpoints', DAMAGED_DIR, 'images', METRICS_FILE, EVAL_FILE)
            for name in (*names, NONFINITE_FILE, WINDOW_FILE):
                path = workdir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            for path in workdir.glob('events.out.tfevents.*'):
                path.unlink()
        _write_json(config_path, new, sort_keys=True)
    _sync('prepare_workdir_written')


def _drop_unset(tree: dict) -> dict:
    """The config without None leaves and empty sub-dicts (unset placeholders)."""
    out = {}
    for k, v in tree.items():
        v = _drop_unset(v) if isinstance(v, dict) else v
        if v is not None and v != {}:
            out[k] = v
    return out


def _write_json(path: Path, value: Any, **kwargs) -> None:
    """Writes JSON atomically (a temporary file renamed over `path`): never a partial file."""
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(value, indent=2, default=_json_default, **kwargs))
    tmp.replace(path)


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
    # A save writes `<step>.orbax-checkpoint-tmp` and renames it when complete, so a kill at any
    # moment leaves either the whole step or a tmp directory, which is never listed as a step
    # and is removed here (cleanup_tmp_directories).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager((workdir / 'checkpoints').resolve(), options=options)


def state_checksum(state: Any) -> str:
    """SHA-256 of a pytree's leaves (paths, dtypes, shapes and bytes), as saved in checkpoints.

    Orbax stores the arrays without a checksum (a flipped bit restores silently), so `_save`
    records this in the step's metadata and `restore_latest` compares it.
    """
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        value = np.asarray(jax.device_get(leaf))
        digest.update(f'{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape}'.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def restore_latest(
    manager: ocp.CheckpointManager, state: steps.TrainState, *, skip_damaged: bool = False
) -> tuple[steps.TrainState, int | None]:
    """Restores the newest complete checkpoint into `state`'s structure, if there is one.

    A checkpoint is damaged when Orbax cannot read it or when its contents differ from the
    checksum recorded at save time (checkpoints saved without one are not verified).

    Args:
      manager: the run's checkpoint manager.
      state: a freshly initialised state: the structure, dtypes and shardings to restore into.
      skip_damaged: move a damaged newest checkpoint to `<workdir>/damaged_checkpoints/` and try
        the one before it (the user asks for this; it is never done silently).

    Returns:
      (state, the restored step or None when there is no checkpoint).

    Raises:
      RuntimeError: the newest checkpoint is damaged and `skip_damaged` is False; the message
        names the directory, the previous checkpoint and what to do.
    """
    while (step := manager.latest_step()) is not None:
        path = Path(manager.directory) / str(step)
        try:
            restored = manager.restore(step, args=ocp.args.StandardRestore(state))
            expected = (manager.metadata(step).custom_metadata or {}).get('checksum')
            if expected is not None and state_checksum(restored) != expected:
                raise ValueError('its contents differ from the checksum recorded when it was saved')
            return restored, step
        except Exception as e:  # Orbax raises several types for damaged files.
            reason = f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}'
            older = [s for s in manager.all_steps() if s < step]
            previous = f'step {max(older)}' if older else 'none: training would start again'
            moved = Path(manager.directory).parent / DAMAGED_DIR / str(step)
            if not skip_damaged:
                raise RuntimeError(
                    f'checkpoint {path} could not be restored ({reason}). It is damaged or '
                    'incomplete (or was written by code with another train state structure). '
                    f'To resume from the previous checkpoint ({previous}), rerun with '
                    f'--skip_damaged_checkpoints (moves it to {moved}), or move or delete that '
                    'directory yourself'
                ) from e
        print(
            f'WARNING: checkpoint {path} is damaged ({reason}); moved to {moved}, trying {previous}'
        )
        if jax.process_index() == 0:
            moved.parent.mkdir(parents=True, exist_ok=True)
            if moved.exists():
                shutil.rmtree(moved)
            shutil.move(str(path), str(moved))
        _sync('skip_damaged_checkpoint')
        manager.reload()
    return state, None


def _sync(name: str) -> None:
    """A barrier across processes (a no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


class _MetricsLog:
    """metrics.jsonl (one JSON object per log step) plus TensorBoard scalars.

    With several processes only process 0 writes; the others hold a log that writes nothing.
    """

    def __init__(self, workdir: Path, resume_step: int, *, final_step: int | None = None):
        """Opens the log, keeping the rows that the checkpoint at `resume_step` accounts for.

        Args:
          workdir: the run directory.
          resume_step: the step of the checkpoint the run resumes from (0 for a fresh run).
          final_step: config.num_train_steps; its eval/* row is written after the final
            checkpoint, so a run resumed at that step drops it and writes it again.

        Raises:
          RuntimeError: metrics.jsonl has an unreadable line other than a partial last line.
        """
        self.path = workdir / METRICS_FILE
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        rows = []
        if self.path.exists():
            # Drop rows written after the checkpoint we resume from (a killed run may have logged
            # past its last checkpoint); the resumed run writes them again, identically.
            lines = self.path.read_text().splitlines()
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    if number == len(lines):  # A kill in the middle of writing the last row.
                        continue
                    raise RuntimeError(
                        f'{self.path} line {number} is not JSON ({e}); fix or delete that line'
                    ) from e
                step = row['step']
                final_eval = step == final_step and any(k.startswith('eval/') for k in row)
                if step <= resume_step and not final_eval:
                    rows.append(line)
        self.path.write_text(''.join(r + '\n' for r in rows))
        import tensorboardX  # Imported here: only the trainer writes event files.

        self.tb = tensorboardX.SummaryWriter(str(workdir))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open('a') as f:
            f.write(json.dumps({'step': step, **metrics}, default=_json_default) + '\n')
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if not self.enabled:
            return
        self.tb.add_image(tag, image, step, dataformats='HWC')
        self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.tb.close()


class StoppedBySignal(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; rerun to resume."""

    def __init__(self, signum: int, step: int):
        super().__init__(
            f'stopped by signal {signum} ({signal.Signals(signum).name}) at step {step}; '
            'checkpoint saved, rerun the same command to resume'
        )
        self.signum = signum
        self.step = step


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
    skip_damaged_checkpoints: bool = False,
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
    run = Run(config)
    prepare_workdir(workdir, config, overwrite=overwrite)

    manager = checkpoint_manager(workdir, config.keep_checkpoints)
    state, restored_step = restore_latest(
        manager, run.create_train_state(), skip_damaged=skip_damaged_checkpoints
    )
    step = int(state.step)
    result = finished_result(workdir, config, step)
    if result is not None:
        return result
    log = _MetricsLog(workdir, step, final_step=config.num_train_steps)
    if restored_step is not None:
        print(f'{workdir}: resuming from checkpoint at step {restored_step}')

    train_images = jax.device_put(run.train_data['image'], run.replicated)
    train_labels = jax.device_put(run.train_data['label'], run.replicated)
    beta = jnp.asarray(config.beta, jnp.float32)
    perm_epoch = jax.device_put(jnp.asarray(step // run.steps_per_epoch, jnp.int32), run.replicated)
    perm = jax.device_put(run.permutation_fn(perm_epoch), run.replicated)
    compiled: set[int] = set()  # chunk lengths already compiled: their first call is not timed

    sums, window_start = _restore_window(workdir, step)
    window_time = time.time()
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
                    row = window_row(sums, step - window_start)
                    rate = (step - window_start) / max(time.time() - window_time, 1e-9)
                    # Written even when non-finite: the record of where the run diverged.
                    log.write(step, {**row, 'train/steps_per_sec': rate})
                    _check_finite(row, window_start, step, manager)
                    bar.set_postfix(loss=f'{row["train/loss"]:.3f}', steps_per_s=f'{rate:.0f}')
                    sums, window_start, window_time = {}, step, time.time()
                if step % config.eval_every_steps == 0 and step < config.num_train_steps:
                    log.write(step, _scalar_metrics(run.evaluate(state), 'eval'))
                if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
                    _save(manager, step, state)
                signum = _agreed_signal(stop)
                if signum is not None or (step == stop_at_step and step < config.num_train_steps):
                    # Between log steps: check the partial window, and keep its sums so that
                    # the resumed run logs the same row as an uninterrupted one.
                    if sums:
                        row = window_row(sums, step - window_start)
                        _check_finite(row, window_start, step, manager)
                    _save(manager, step, state)
                    _save_window(workdir, step, window_start, sums)
                    log.close()
                    if signum is not None:
                        raise StoppedBySignal(signum, step)
                    return {'step': step}
        manager.wait_until_finished()
    finally:
        bar.close()

    return finish_run(
        run,
        state,
        step,
        log,
        workdir,
        # Steps per second of training calls, compilation excluded (None if every call compiled).
        train_steps_per_sec=timed_steps / train_time if train_time > 0 else None,
        start_time=start_time,
    )


def finished_result(
    workdir: Path, config: ml_collections.ConfigDict, step: int
) -> dict[str, Any] | None:
    """The eval.json of a run that is finished at `step` (and says so), else None."""
    eval_path = workdir / EVAL_FILE
    if step >= config.num_train_steps and eval_path.exists():
        result = json.loads(eval_path.read_text())
        if result.get('step') == step:
            print(
                f'{workdir}: run already finished at step {step}; '
                f'test ELBO {_format_metric(result.get("elbo"))} (see {eval_path})'
            )
            return result
    return None


def finish_run(
    run: Run,
    state: steps.TrainState,
    step: int,
    log: _MetricsLog,
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
    log.write(step, _scalar_metrics(result, 'eval'))
    primary = jax.process_index() == 0  # With several processes, process 0 writes the files.
    pictures = {}
    if primary:
        pictures = vae_pictures.write_pictures(
            run,
            state,
            workdir / 'images',
            posterior_means=per_example['posterior_mean'],
            labels=run.eval_split()[1],
            metrics_path=workdir / METRICS_FILE,
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
    _write_json(workdir / EVAL_FILE, result)
    print(
        f'{workdir}: step {step}, test ELBO {_format_metric(result.get("elbo"))}, '
        f'{result["train_steps_per_sec"] or 0:.1f} steps/s, '
        f'wall time {result["wall_time_sec"]:.1f} s'
    )
    return result


def _format_metric(value: float | None) -> str:
    """A metric for the summary line; None (no ELBO for the autoencoder objective) -> 'n/a'."""
    return 'n/a' if value is None else f'{value:.4f}'


def _save(manager: ocp.CheckpointManager, step: int, state: steps.TrainState) -> None:
    """Saves `state` at `step` unless that step is already saved; returns once it is on disk.

    The step's metadata records `state_checksum(state)`, which `restore_latest` verifies.

    Raises:
      RuntimeError: the state holds NaN or inf; nothing is saved (the last good checkpoint
        stays the newest) and `<workdir>/nonfinite.json` says which arrays.
    """
    if manager.latest_step() == step:
        return
    host = jax.device_get(state)
    bad = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(host)
        if np.issubdtype(np.asarray(leaf).dtype, np.inexact) and not np.isfinite(leaf).all()
    ]
    if bad:
        raise _nonfinite_error(
            manager,
            f'the state to checkpoint at step {step} holds NaN or inf in {", ".join(bad[:4])}',
            {'step': step, 'nonfinite_arrays': bad},
        )
    custom_metadata = {'checksum': state_checksum(host)}
    manager.save(
        step, args=ocp.args.StandardSave(state), force=True, custom_metadata=custom_metadata
    )
    manager.wait_until_finished()


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


def _restore_window(workdir: Path, step: int) -> tuple[dict[str, float], int]:
    """The metric sums and start of the log window that was open at the checkpoint `step`."""
    path = workdir / WINDOW_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        if saved['step'] == step:
            return saved['sums'], saved['window_start']
    return {}, step


def _save_window(workdir: Path, step: int, window_start: int, sums: dict[str, float]) -> None:
    if sums and jax.process_index() == 0:
        _write_json(
            workdir / WINDOW_FILE, {'step': step, 'window_start': window_start, 'sums': sums}
        )


def _agreed_signal(stop: _StopSignal) -> int | None:
    """The stop signal any process has received, or None: all processes stop at one step."""
    if jax.process_count() == 1:
        return stop.received
    received = multihost_utils.process_allgather(np.int32(stop.received or 0))
    return int(np.max(received)) or None


def _nonfinite_error(
    manager: ocp.CheckpointManager, what: str, record: dict[str, Any]
) -> RuntimeError:
    """Writes `<workdir>/nonfinite.json` and returns the error that stops the run."""
    last = manager.latest_step()
    workdir = Path(manager.directory).parent
    where = f'step {last} in {manager.directory}' if last is not None else 'none (none saved)'
    if jax.process_index() == 0:
        record = {**record, 'last_checkpoint_step': last, 'checkpoint_dir': str(manager.directory)}
        _write_json(workdir / NONFINITE_FILE, record)
    return RuntimeError(
        f'{what}; training stopped. The last good checkpoint is {where}; what was seen is in '
        f'{workdir / NONFINITE_FILE}. Lower optim.learning_rate, set optim.grad_clip_norm, check '
        'the data, or set skip_nonfinite_updates=True to drop such updates'
    )


def _check_finite(row: dict[str, float], start: int, end: int, manager) -> None:
    """Raises RuntimeError (and writes nonfinite.json) if a log row holds NaN or inf."""
    bad = [k for k, v in row.items() if not math.isfinite(v)]
    if bad:
        what = f'non-finite {", ".join(bad)} between steps {start} and {end}'
        if row.get('train/skipped', 0) >= end - start:
            what += f' (all {end - start} updates were non-finite and skipped)'
        raise _nonfinite_error(
            manager, what, {'steps': [start, end], 'nonfinite': bad, 'metrics': row}
        )
