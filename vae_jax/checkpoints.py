"""Checkpoints: Orbax, atomic, verified by a checksum, never of a non-finite state.

A save writes `<workdir>/checkpoints/<step>.orbax-checkpoint-tmp` and renames it when complete,
so a kill at any moment leaves either the whole step or a tmp directory that is ignored and
removed. Each step's metadata (`<step>/_CHECKPOINT_METADATA`) records a SHA-256 of the state,
checked on restore; a damaged newest checkpoint is refused with a message naming it (or moved
aside on request). A checkpoint whose checksum is missing (that file deleted or rewritten) and
that reads cannot be verified: it is refused as unverified (`errors.UnverifiedCheckpoint`), and
restored, with a warning, only when the caller passes `allow_unverified=True`
(`--allow_unverified_checkpoints`). It is never taken for damaged and moved aside: nothing shows
that it is. (One that does not read is damaged, as any other.)

A save that fails (disk full, permission lost, I/O error) removes its partial step and raises
`CheckpointSaveError`, one message naming the directory, the cause and what to do; the previous
checkpoint stays the newest, so the same command resumes once the cause is fixed.

Two forms on disk, both `checkpoints/<step>/` Orbax checkpoints: a training checkpoint (the whole
`TrainState`: parameters, optimizer state, BatchNorm statistics, step) and a parameters-only
checkpoint (`{'params', 'batch_stats', 'step'}`, its metadata saying `contents: params`), which
`export_params` writes for a finished run that is published to be loaded, not resumed.
"""

from __future__ import annotations

import errno
import hashlib
import logging as std_logging
import shutil
import sys
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from flax.training import train_state

from vae_jax import build, errors, optim, run_files, steps

# What Orbax appends to a step directory's name while it is being written.
TMP_SUFFIX = '.orbax-checkpoint-tmp'
# custom_metadata['contents'] of a parameters-only checkpoint (see `export_params`).
PARAMS_ONLY = 'params'


class CheckpointMismatch(RuntimeError):
    """A checkpoint written by another model or train-state structure: readable, not damaged."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the message says where, why and what to do."""


class _OrbaxNoise(std_logging.Filter):
    """Drops Orbax's warnings about states that are normal here and read like failures.

    A read-only manager (evaluation, `vae_jax.load`) logs that its directory is read only and
    that the item 'default' "could not be restored" (it restores fine, given its args); a
    missing step metadata file is reported by `restore_latest` itself, in words.
    """

    BENIGN = (
        'Given directory is read only',
        'could not be restored. Please provide a `CheckpointHandlerRegistry`',
        'Metadata file does not exist',
    )

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno > std_logging.WARNING or '/orbax/' not in record.pathname:
            return True
        text = record.getMessage()
        return not any(benign in text for benign in self.BENIGN)


# Orbax logs through absl's logger.
std_logging.getLogger('absl').addFilter(_OrbaxNoise())


def params_item(state: steps.TrainState) -> dict[str, Any]:
    """What a parameters-only checkpoint holds: {'params', 'batch_stats', 'step'}."""
    return {'params': state.params, 'batch_stats': state.batch_stats, 'step': state.step}


def variables_of(restored: steps.TrainState | dict[str, Any]) -> dict[str, Any]:
    """{'params', optional 'batch_stats'} of a restored train state or parameters-only item."""
    if isinstance(restored, dict):
        params, batch_stats = restored['params'], restored['batch_stats']
    else:
        params, batch_stats = restored.params, restored.batch_stats
    return {'params': params, **({'batch_stats': batch_stats} if batch_stats else {})}


def close(manager: ocp.CheckpointManager) -> None:
    """Closes a manager; a failure to close (after a failed save) must not hide the first error."""
    try:
        manager.close()
    except Exception as e:  # noqa: BLE001 (reported, and the run is ending anyway)
        print(f'WARNING: closing the checkpoint manager of {manager.directory} failed: {e}')


def checkpoint_manager(workdir: Path, keep: int) -> ocp.CheckpointManager:
    """Orbax manager; a step becomes visible only once fully written (atomic rename)."""
    # A save writes `<step>.orbax-checkpoint-tmp` and renames it when complete, so a kill at any
    # moment leaves either the whole step or a tmp directory, which is never listed as a step
    # and is removed here. Removed before the manager exists, not by Orbax's
    # cleanup_tmp_directories: that runs in a background thread which only a save waits for, so
    # a run that ends without saving (a finished run started again) could exit while it still
    # ran ("RuntimeError: cannot schedule new futures after shutdown").
    directory = (workdir / run_files.CHECKPOINT_DIR).resolve()
    if jax.process_index() == 0 and directory.is_dir():
        for leftover in directory.glob(f'*{TMP_SUFFIX}*'):
            shutil.rmtree(leftover, ignore_errors=True)
    run_files.sync('checkpoint_tmp_cleanup')
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(directory, options=options)


def state_checksum(state: Any) -> str:
    """SHA-256 of a pytree's leaves (paths, dtypes, shapes and bytes), as saved in checkpoints.

    Orbax stores the arrays without a checksum (a flipped bit restores silently), so `save`
    records this in the step's metadata and `restore_latest` compares it.
    """
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        value = np.asarray(jax.device_get(leaf))
        digest.update(f'{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape}'.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def load(
    workdir: Path,
    state: steps.TrainState,
    *,
    allow_params_only: bool = False,
    allow_unverified: bool = False,
) -> tuple[steps.TrainState | dict[str, Any], int | None]:
    """`restore_latest` for a run directory, read-only, with a manager that is closed after.

    Read-only so that evaluating a run while it trains is safe: a training manager removes
    leftover `*.orbax-checkpoint-tmp` directories and creates `checkpoints/`; this one touches
    nothing (the trainer's save in flight keeps its tmp directory).

    Args:
      workdir: the run directory (its checkpoints are in `<workdir>/checkpoints/`).
      state: a freshly initialised state: the structure to restore into.
      allow_params_only: accept a parameters-only checkpoint (then a `params_item` is returned).
      allow_unverified: restore a checkpoint without a checksum, with a warning.

    Returns:
      (state, the restored step or None when the run has no checkpoint).

    Raises:
      RuntimeError: the newest checkpoint is damaged, or unverified (see `restore_latest`).
    """
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    manager = ocp.CheckpointManager(
        (Path(workdir) / run_files.CHECKPOINT_DIR).resolve(), options=options
    )
    try:
        return restore_latest(
            manager,
            state,
            allow_params_only=allow_params_only,
            allow_unverified=allow_unverified,
        )
    finally:
        manager.close()


def restore_latest(
    manager: ocp.CheckpointManager,
    state: steps.TrainState,
    *,
    skip_damaged: bool = False,
    allow_params_only: bool = False,
    allow_unverified: bool = False,
) -> tuple[steps.TrainState | dict[str, Any], int | None]:
    """Restores the newest complete checkpoint into `state`'s structure, if there is one.

    A checkpoint is damaged when Orbax cannot read it or when its contents differ from the
    checksum recorded at save time. One that reads but whose metadata holds no checksum is
    unverified: refused unless `allow_unverified` (never moved aside, even with `skip_damaged`:
    nothing shows that it is damaged).

    Args:
      manager: the run's checkpoint manager.
      state: a freshly initialised state: the structure, dtypes and shardings to restore into.
      skip_damaged: move a damaged newest checkpoint to `<workdir>/damaged_checkpoints/` and try
        the one before it (the user asks for this; it is never done silently).
      allow_params_only: accept a parameters-only checkpoint (`export_params`) and return its
        `params_item`; otherwise such a checkpoint is refused (it cannot resume training).
      allow_unverified: restore a checkpoint that has no checksum, with a warning on stderr.

    Returns:
      (state, the restored step or None when there is no checkpoint).

    Raises:
      RuntimeError: the newest checkpoint is damaged and `skip_damaged` is False; the message
        names the directory, the previous checkpoint and what to do. Or it holds parameters
        only and `allow_params_only` is False.
      errors.UnverifiedCheckpoint (a RuntimeError): it has no checksum and `allow_unverified`
        is False.
    """
    while (step := manager.latest_step()) is not None:
        path = Path(manager.directory) / str(step)
        try:
            custom = manager.metadata(step).custom_metadata or {}
        except Exception:  # noqa: BLE001 (damaged metadata: reported by the restore below)
            custom = None
        target = state
        if custom and custom.get('contents') == PARAMS_ONLY:
            if not allow_params_only:
                raise RuntimeError(
                    f'checkpoint {path} holds parameters only (exported to be loaded with '
                    'vae_jax.load, without optimizer state): training cannot resume from it. '
                    'Use another --workdir to train again'
                )
            target = params_item(state)
        mismatch = structure_mismatch(path, target)
        if mismatch is not None:  # Not damage: never moved aside, whatever `skip_damaged` says.
            raise CheckpointMismatch(
                f'checkpoint {path} was written by another model or train-state structure: '
                f'{mismatch}. It is not damaged, and nothing was moved. Restore it with the model '
                'and config that wrote it (a model passed from Python: pass that model again, '
                'model=...); to train another model, use another --workdir'
            )
        expected = None if custom is None else custom.get('checksum')
        try:
            if custom is None:
                raise ValueError('its metadata cannot be read')
            restored = restore_step(manager, step, target)
            if expected is not None and state_checksum(restored) != expected:
                raise ValueError('its contents differ from the checksum recorded when it was saved')
        except Exception as e:  # Orbax raises several types for damaged files.
            reason = _restore_failure(e)
            older = [s for s in manager.all_steps() if s < step]
            previous = f'step {max(older)}' if older else 'none: training would start again'
            moved = Path(manager.directory).parent / run_files.DAMAGED_DIR / str(step)
            if not skip_damaged:
                raise RuntimeError(
                    f'checkpoint {path} could not be restored ({reason}). It is damaged or '
                    'incomplete (its array structure matches this model). '
                    f'To resume from the previous checkpoint ({previous}), rerun training with '
                    f'--skip_damaged_checkpoints (moves it to {moved}; from Python, '
                    'trainer.train_and_evaluate(..., skip_damaged_checkpoints=True)), or move or '
                    'delete that directory yourself'
                ) from e
        else:
            if expected is None:  # Readable, but nothing shows that it is what was saved.
                _unverified(path, allow_unverified)
            return restored, step
        print(
            f'WARNING: checkpoint {path} is damaged ({reason}); moved to {moved}, trying {previous}'
        )
        if jax.process_index() == 0:
            moved.parent.mkdir(parents=True, exist_ok=True)
            if moved.exists():
                shutil.rmtree(moved)
            shutil.move(str(path), str(moved))
        run_files.sync('skip_damaged_checkpoint')
        manager.reload()
    return state, None


class _TrainStateWithoutAux(train_state.TrainState):
    """The train state as checkpoints written before auxiliary networks hold it (no `aux`)."""

    batch_stats: Any = flax.struct.field(default_factory=dict)


def restore_step(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
    """`manager.restore` of `step` into `target`'s structure (no verification: `restore_latest`).

    A training checkpoint written before the train state had auxiliary networks (no `aux` in
    it) restores into a target whose `aux` is empty, as the same state: such a group has no
    arrays, so the checksum is the one recorded then.
    """
    if isinstance(target, steps.TrainState) and not target.aux:
        try:
            saved = ocp.StandardCheckpointHandler().metadata(
                Path(manager.directory) / str(step) / _ITEM
            )
            legacy = 'aux' not in saved.keys()
        except Exception:  # noqa: BLE001 (unreadable: the restore below reports it)
            legacy = False
        if legacy:
            fields = ('step', 'apply_fn', 'params', 'tx', 'opt_state', 'batch_stats')
            old = _TrainStateWithoutAux(**{f: getattr(target, f) for f in fields})
            restored = manager.restore(step, args=ocp.args.StandardRestore(old))
            return target.replace(
                step=restored.step,
                params=restored.params,
                opt_state=restored.opt_state,
                batch_stats=restored.batch_stats,
            )
    return manager.restore(step, args=ocp.args.StandardRestore(target))


def structure_mismatch(path: Path, target: Any, limit: int = 4) -> str | None:
    """How checkpoint `path`'s saved arrays differ from `target`'s (names or shapes), or None.

    Reads only the array metadata Orbax saved with the step. None also when that metadata
    cannot be read: the restore then fails and reports the damage.
    """
    try:
        saved = ocp.StandardCheckpointHandler().metadata(path / _ITEM)
    except Exception:  # noqa: BLE001 (unreadable: the restore reports it)
        return None
    ours = {_path_name(p): tuple(np.shape(leaf)) for p, leaf in _leaves(target)}
    theirs = {_path_name(p): _shape(leaf) for p, leaf in _leaves(saved)}
    problems = _aux_group_problems(ours, theirs)
    problems += [f'{k} is not in the checkpoint' for k in _sorted(set(ours) - set(theirs))]
    problems += [f'{k} is only in the checkpoint' for k in _sorted(set(theirs) - set(ours))]
    problems += [
        f'{k} is {list(theirs[k])} in the checkpoint, {list(ours[k])} in this model'
        for k in _sorted(set(ours) & set(theirs))
        if theirs[k] is not None and theirs[k] != ours[k]
    ]
    if not problems:
        return None
    more = f' (and {len(problems) - limit} more)' if len(problems) > limit else ''
    return '; '.join(problems[:limit]) + more


def _aux_group_problems(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """An auxiliary network (`state.aux[name]`) that only one side has, as one problem each.

    Its arrays are removed from both dicts, so they are not listed one by one.
    """
    problems = []
    for have, lack, where in ((ours, theirs, 'not in'), (theirs, ours, 'only in')):
        groups = {k.split('/')[1] for k in have if k.startswith('aux/') and k.count('/') > 1}
        for group in sorted(g for g in groups if not any(k.startswith(f'aux/{g}/') for k in lack)):
            problems.append(
                f"the auxiliary network {group!r} (state.aux['{group}']: its parameters and "
                f'optimizer state, trained by objectives that declare it) is {where} the checkpoint'
            )
            for k in [k for k in have if k.startswith(f'aux/{group}/')]:
                del have[k]
    return problems


# The item directory of a step saved by `CheckpointManager` with one unnamed item.
_ITEM = 'default'


def _leaves(tree: Any) -> list[tuple[Any, Any]]:
    return jax.tree_util.tree_leaves_with_path(tree)


def _path_name(path: Any) -> str:
    """'params/encoder/kernel': keys by name whether dict keys, attributes or indices.

    Orbax's metadata tree holds dicts where the train state has attributes (a dataclass,
    optax's named tuples), so the two are compared by names alone.
    """
    names = []
    for key in path:
        for attr in ('key', 'name', 'idx'):
            if hasattr(key, attr):
                names.append(str(getattr(key, attr)))
                break
        else:
            names.append(str(key))
    return '/'.join(names)


def _sorted(names: set[str]) -> list[str]:
    """Parameters first (what differs in the model), then those of the auxiliary networks, then
    the optimizer states and the rest."""

    def rank(k: str) -> int:
        if k.startswith('params/'):
            return 0
        return 1 if k.startswith('aux/') and k.split('/')[2:3] == ['params'] else 2

    return sorted(names, key=lambda k: (rank(k), k))


def _shape(leaf: Any) -> tuple[int, ...] | None:
    shape = getattr(leaf, 'shape', None)
    return None if shape is None else tuple(shape)


def _unverified(path: Path, allow: bool) -> None:
    """Refuses (or, if allowed, warns about) the checkpoint `path` that has no checksum."""
    what = (
        f'checkpoint {path} has no recorded checksum ({path}/_CHECKPOINT_METADATA is missing '
        'or holds none), so its contents cannot be verified'
    )
    if not allow:
        raise errors.UnverifiedCheckpoint(
            f'{what}. If you trust it, pass --allow_unverified_checkpoints (from Python: '
            'allow_unverified_checkpoints=True) to restore it as it is; else move that directory '
            'away to use the checkpoint before it'
        )
    print(f'WARNING: {what}; restoring it unverified, as asked', file=sys.stderr, flush=True)


def _restore_failure(error: BaseException) -> str:
    """Why a restore failed, in one line: the innermost exception of the chain.

    Orbax wraps TensorStore's read error (e.g. `ZSTD_decompressStream() failed` for damaged
    compressed bytes) in an exception whose first line only names the array index.
    """
    inner = error
    while (nxt := inner.__cause__ or inner.__context__) is not None and str(nxt):
        inner = nxt
    text = str(inner).splitlines()[0][:500] if str(inner) else ''
    return f'{type(inner).__name__}: {text}'


def save(manager: ocp.CheckpointManager, step: int, state: steps.TrainState) -> None:
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
        raise nonfinite_error(
            manager,
            f'the state to checkpoint at step {step} holds NaN or inf in {", ".join(bad[:4])}',
            {'step': step, 'nonfinite_arrays': bad},
        )
    custom_metadata = {'checksum': state_checksum(host)}
    try:
        manager.save(
            step, args=ocp.args.StandardSave(state), force=True, custom_metadata=custom_metadata
        )
        manager.wait_until_finished()
    except Exception as e:  # Orbax and TensorStore wrap the OSError in several types.
        raise save_error(manager, step, e) from e


def _cause(error: BaseException) -> str:
    """What failed, in words, from the first OSError in the exception chain (else its text)."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            words = {
                errno.ENOSPC: 'no space left on the device',
                errno.EDQUOT: 'disk quota exceeded',
                errno.EACCES: 'permission denied',
                errno.EPERM: 'operation not permitted',
                errno.EROFS: 'read-only file system',
                errno.EIO: 'an I/O error',
            }.get(seen.errno, seen.strerror or errno.errorcode.get(seen.errno, ''))
            return f'{words} ({errno.errorcode.get(seen.errno, seen.errno)})'
        seen = seen.__cause__ or seen.__context__
    text = str(error).splitlines()[0][:300] if str(error) else ''
    if 'RESOURCE_EXHAUSTED' in str(error) or 'No space left' in str(error):
        return f'no space left on the device ({type(error).__name__}: {text})'
    return f'{type(error).__name__}: {text}'


def save_error(manager: ocp.CheckpointManager, step: int, error: BaseException) -> OSError:
    """Removes the failed save's partial step and returns the error that stops the run."""
    directory = Path(manager.directory)
    leftovers = []
    if jax.process_index() == 0:
        for path in (directory / str(step), *directory.glob(f'{step}.orbax-checkpoint-tmp*')):
            try:
                if path.is_dir():
                    shutil.rmtree(path)
            except OSError:
                leftovers.append(str(path))
    try:
        manager.reload()
        previous = manager.latest_step()
    except Exception:  # noqa: BLE001 (the directory may be unreadable now; say so below)
        previous = None
    resume = (
        f'resumes from the previous checkpoint, step {previous}'
        if previous is not None
        else 'starts again from step 0 (no earlier checkpoint)'
    )
    removed = (
        f'; remove the partial {", ".join(leftovers)} by hand'
        if leftovers
        else ' (its partial files were removed)'
    )
    return CheckpointSaveError(
        f'saving the checkpoint of step {step} into {directory} failed: {_cause(error)}'
        f'{removed}. Training stopped; metrics.jsonl and the earlier checkpoints are intact. '
        'Free space or restore write access there (df -h, ls -ld), then rerun the same command: '
        f'it {resume}'
    )


def export_params(workdir: str | Path, model: Any = None) -> Path:
    """Rewrites a finished run's checkpoints as one parameters-only checkpoint, for publishing.

    The newest checkpoint is verified, then written again as `{'params', 'batch_stats', 'step'}`
    (no optimizer state: for an Adam-trained model a third of the size), with its own checksum,
    and replaces `<workdir>/checkpoints/` (the older steps go). `vae_jax.load` and
    `vae_jax.evaluate` read it; the trainer refuses to resume from it. Idempotent.

    Args:
      workdir: a finished run directory (newest checkpoint at config.num_train_steps or later).
      model: the module the run trained, for a run trained with a model passed from Python that
        its config.json cannot rebuild.

    Returns:
      The path of the exported step.

    Raises:
      FileNotFoundError: no config.json or no checkpoint.
      build.ModelNotRebuildable: the run's model must be passed from Python (`model=`).
      ValueError: the run is not finished, or `model` is not the run's.
      RuntimeError: the newest checkpoint is damaged.
    """
    workdir = Path(workdir)
    config = build.read_config(workdir)
    build.require_model(config, model, workdir)  # Before anything is touched.
    parts = build.build(config, model=model)
    tx = optim.create_optimizer(
        config.optim, steps_per_epoch=1, num_train_steps=config.num_train_steps
    )
    target = jax.device_get(build.create_train_state(parts, build.root_keys(config.seed)[0], tx))
    restored, step = load(workdir, target, allow_params_only=True)
    if step is None:
        raise FileNotFoundError(f'no checkpoint in {workdir / run_files.CHECKPOINT_DIR}')
    directory = workdir / run_files.CHECKPOINT_DIR
    if isinstance(restored, dict):
        return directory / str(step)  # Already parameters only.
    if step < config.num_train_steps:
        raise ValueError(
            f'{workdir} is not finished (newest checkpoint at step {step}, '
            f'num_train_steps={config.num_train_steps}): export only finished runs'
        )
    item = jax.device_get(params_item(restored))
    tmp = workdir / f'{run_files.CHECKPOINT_DIR}.export-tmp'
    old = workdir / f'{run_files.CHECKPOINT_DIR}.export-old'
    for path in (tmp, old):
        if path.exists():
            shutil.rmtree(path)
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    manager = ocp.CheckpointManager(tmp.resolve(), options=options)
    try:
        manager.save(
            step,
            args=ocp.args.StandardSave(item),
            custom_metadata={'checksum': state_checksum(item), 'contents': PARAMS_ONLY},
        )
        manager.wait_until_finished()
    finally:
        manager.close()
    directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old)
    return directory / str(step)


def nonfinite_error(
    manager: ocp.CheckpointManager, what: str, record: dict[str, Any]
) -> RuntimeError:
    """Writes `<workdir>/nonfinite.json` and returns the error that stops the run."""
    last = manager.latest_step()
    workdir = Path(manager.directory).parent
    where = f'step {last} in {manager.directory}' if last is not None else 'none (none saved)'
    if jax.process_index() == 0:
        record = {**record, 'last_checkpoint_step': last, 'checkpoint_dir': str(manager.directory)}
        run_files.write_json(workdir / run_files.NONFINITE_FILE, record)
    return RuntimeError(
        f'{what}; training stopped. The last good checkpoint is {where}; what was seen is in '
        f'{workdir / run_files.NONFINITE_FILE}. Lower optim.learning_rate, set '
        'optim.grad_clip_norm, check the data, or set skip_nonfinite_updates=True to drop such '
        'updates'
    )
