"""Checkpoints: Orbax, atomic, verified by a checksum, never of a non-finite state.

A save writes `<workdir>/checkpoints/<step>.orbax-checkpoint-tmp` and renames it when complete,
so a kill at any moment leaves either the whole step or a tmp directory that is ignored and
removed. Each step's metadata records a SHA-256 of the state, checked on restore; a damaged
newest checkpoint is refused with a message naming it (or moved aside on request).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from vae_jax import run_files, steps


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
    return ocp.CheckpointManager((workdir / run_files.CHECKPOINT_DIR).resolve(), options=options)


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


def load(workdir: Path, state: steps.TrainState) -> tuple[steps.TrainState, int | None]:
    """`restore_latest` for a run directory, read-only, with a manager that is closed after.

    Read-only so that evaluating a run while it trains is safe: a training manager removes
    leftover `*.orbax-checkpoint-tmp` directories and creates `checkpoints/`; this one touches
    nothing (the trainer's save in flight keeps its tmp directory).

    Args:
      workdir: the run directory (its checkpoints are in `<workdir>/checkpoints/`).
      state: a freshly initialised state: the structure to restore into.

    Returns:
      (state, the restored step or None when the run has no checkpoint).

    Raises:
      RuntimeError: the newest checkpoint is damaged (see `restore_latest`).
    """
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    manager = ocp.CheckpointManager(
        (Path(workdir) / run_files.CHECKPOINT_DIR).resolve(), options=options
    )
    try:
        return restore_latest(manager, state)
    finally:
        manager.close()


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
            moved = Path(manager.directory).parent / run_files.DAMAGED_DIR / str(step)
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
        run_files.sync('skip_damaged_checkpoint')
        manager.reload()
    return state, None


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
    manager.save(
        step, args=ocp.args.StandardSave(state), force=True, custom_metadata=custom_metadata
    )
    manager.wait_until_finished()


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
