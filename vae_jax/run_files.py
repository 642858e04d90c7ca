"""The files of a run directory, other than checkpoints (vae_jax/checkpoints.py).

    <workdir>/config.json        the run's config (a rerun must match it, or pass --overwrite);
                                 `read_config` reads and validates it
    <workdir>/metrics.jsonl      one JSON object per log/eval step; TensorBoard events beside it
    <workdir>/eval.json          the final test evaluation (and `vae_jax.evaluate`'s results)
    <workdir>/train_window.json  the metric sums of a log window cut short by a stop
    <workdir>/nonfinite.json     what a run saw when its loss or state became non-finite
    <workdir>/images/            pictures (vae_jax/pictures.py)
    <workdir>/run.lock           who is training in this directory (see `WorkdirLock`)
    <workdir>/trackers.json      the MLflow / W&B run ids that a resumed run continues

Written by the trainer only (with several processes, by process 0); JSON files are replaced
atomically, so a kill never leaves a partial file.

config.json records the data set by name; where the data lives is the machine's business
(`--config.input.data_dir` or `$TFDS_DATA_DIR` at training time, `--data_dir` or
`$TFDS_DATA_DIR` for `vae_jax.evaluate`), so `input.data_dir` is stored unset and a run directory
can be moved to another machine. Run-length and cadence keys (`RESUMABLE_KEYS`) may change
between invocations: the run resumes with the new values.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from vae_jax import config as default_config
from vae_jax import config_validation

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
EVAL_FILE = 'eval.json'
# What a run saw when its loss became non-finite (the offending metrics row, steps, checkpoint).
NONFINITE_FILE = 'nonfinite.json'
# Metric sums of a log window cut short by a stop between log steps (signal or stop_at_step),
# so that the resumed run logs the same row as an uninterrupted one.
WINDOW_FILE = 'train_window.json'
CHECKPOINT_DIR = 'checkpoints'
DAMAGED_DIR = 'damaged_checkpoints'
LOCK_FILE = 'run.lock'
# The tracker runs (MLflow, W&B) of this run directory, continued on resume (vae_jax/writers.py).
TRACKERS_FILE = 'trackers.json'
# Keys that change how long a run goes or how often it logs, evaluates and saves, or where the
# data is read from, or where the rows are logged (`logging`), but not what it computes: changing
# them resumes the run instead of refusing.
# input.pipeline / device_budget_gb: both pipelines read the same batches (vae_jax/streaming.py).
RESUMABLE_KEYS = (
    'num_train_steps',
    'steps_per_call',
    'input.data_dir',
    'input.pipeline',
    'input.device_budget_gb',
    'logging',
)
RESUMABLE_SUFFIX = '_every_steps'


class WorkdirLocked(RuntimeError):
    """Another process holds the workdir's lock (its host, pid and start time are in the text)."""


class WorkdirLock:
    """An exclusive OS lock (`fcntl.flock`) on `<workdir>/run.lock`, held for a whole run.

    The kernel releases it when the holding process exits, however it exits (kill -9 included),
    so a lock is never stale; the file's text (host, pid, start time) only names the holder for
    the message of a refused start. Taken before anything in the workdir is written, so a refused
    start changes nothing. With several processes only process 0 takes it: the processes of one
    run share its workdir, and two runs on one workdir collide on process 0. (flock is per host
    on most network file systems; two hosts' process 0 on one shared workdir is not detected
    where the file system does not forward flock.)
    """

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK_FILE
        self._file = None

    def acquire(self) -> WorkdirLock:
        """Takes the lock or raises.

        With several processes, process 0 takes it and tells the others, so that all of them
        stop at start when it is held elsewhere.

        Raises:
          WorkdirLocked: another process holds it; the message names the holder.
          PermissionError: the workdir cannot be created or written.
        """
        error = None
        if jax.process_index() == 0:
            try:
                self._take()
            except (WorkdirLocked, PermissionError) as e:
                error = e
        if jax.process_count() > 1:
            taken = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
            if not taken and error is None:
                raise WorkdirLocked(
                    f'workdir {str(self.path.parent)!r} could not be locked by process 0 (its '
                    'message names the holder or the cause)'
                )
        if error is not None:
            raise error
        return self

    def _take(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # 'a+' neither truncates nor replaces the file: the holder's text stays readable.
            file = open(self.path, 'a+')  # noqa: SIM115 (held open for the whole run)
        except OSError as e:
            raise PermissionError(
                f'workdir {str(self.path.parent)!r} cannot be written ({e.strerror}); pass a '
                'writable --workdir'
            ) from e
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or 'unknown (it has not written its name yet)'
            file.close()
            raise WorkdirLocked(
                f'workdir {str(self.path.parent)!r} is in use by another run: {holder}. Wait '
                'for it to finish (or stop it), or use another --workdir. The lock is released '
                'when that process exits, even if it is killed'
            ) from None
        since = datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')
        file.seek(0)
        file.truncate()
        file.write(f'host {socket.gethostname()}, pid {os.getpid()}, since {since}\n')
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.truncate(0)  # The text names a holder only while one holds it.
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray | jax.Array):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f'cannot serialise {type(value).__name__} to JSON')


def stored_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as config.json stores it: JSON, with `input.data_dir` unset (machine-specific)."""
    out = json.loads(config.to_json_best_effort())
    if isinstance(out.get('input'), dict):
        out['input']['data_dir'] = None
    return out


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The run's config from `<workdir>/config.json` (written by the trainer), validated.

    Keys the file lacks (added to the project after the run) take their defaults.

    Raises:
      FileNotFoundError: no config.json (not a run directory).
      ValueError: config.json is not JSON or fails validation; the message names the file and
        the key.
    """
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f'{path} not found: the workdir must be a run directory written by vae_jax.train'
        )
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f'{path} is not valid JSON ({e}); restore that file') from e
    return config_from_stored(stored, path)


def config_from_stored(stored: dict[str, Any], path: Path) -> ml_collections.ConfigDict:
    """A config.json's contents as a validated ConfigDict (missing keys take their defaults).

    Raises:
      ValueError: it fails validation; the message names `path` and the key.
    """
    try:
        config = ml_collections.ConfigDict(stored)
        config.eval_k_samples = tuple(config.eval_k_samples)
        _fill_missing(config, default_config.get_config())
        config_validation.validate(config)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(
            f'{path} is invalid: {e}. It was edited by hand or written by other code: restore '
            'the value this run was trained with'
        ) from e
    return config


def _fill_missing(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
    """Adds (recursively) the keys of `defaults` that `config` lacks, with their defaults."""
    for key in defaults.keys():
        if key not in config:
            value = defaults[key]
            config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
        elif isinstance(defaults[key], ml_collections.ConfigDict) and isinstance(
            config[key], ml_collections.ConfigDict
        ):
            _fill_missing(config[key], defaults[key])


def drop_resumable(tree: dict, prefix: str = '') -> dict:
    """The config without `RESUMABLE_KEYS` and `*_every_steps` (what a resume may change)."""
    out = {}
    for k, v in tree.items():
        name = f'{prefix}{k}'
        if name in RESUMABLE_KEYS or k.endswith(RESUMABLE_SUFFIX):
            continue
        out[k] = drop_resumable(v, f'{name}.') if isinstance(v, dict) else v
    return out


def prepare_workdir(workdir: Path, config: ml_collections.ConfigDict, *, overwrite: bool) -> None:
    """Creates the workdir, checks it is writable, and refuses a run of a different config.

    Keys that are unset (None) count as absent, and keys that config.json lacks take their
    defaults (as `read_config` fills them), so a config key added to the project later does not
    make older runs unresumable; a change of run length, cadence or data
    location only (`RESUMABLE_KEYS`, `*_every_steps`) resumes the run, and config.json is
    rewritten with the new values. With several processes, every process checks and process 0
    writes.

    Raises:
      PermissionError: the workdir cannot be created or written.
      ValueError: the workdir holds a run of a different config and `overwrite` is False, or its
        config.json is not JSON, or (without `overwrite`) fails validation.
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
    new = stored_config(config)
    delete = False
    if config_path.exists():
        try:
            old = json.loads(config_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(
                f'{config_path} is not valid JSON ({e}); restore that file (or, if the run '
                'there is not needed, use another --workdir)'
            ) from e
        try:  # Keys added to the project since the run take their defaults, as on load.
            old = stored_config(config_from_stored(old, config_path))
        except ValueError:
            pass  # Reported below, as an invalid config.json, if it differs.
        if drop_resumable(drop_unset(old)) != drop_resumable(drop_unset(new)):
            if not overwrite:
                # A hand-edited, invalid config.json is reported as such: --overwrite (which
                # deletes the run) is advised only for a valid run of another config.
                config_from_stored(old, config_path)
                diff = config_diff(drop_resumable(old), drop_resumable(new))
                raise ValueError(
                    f'workdir {str(workdir)!r} holds a run of a different config '
                    f'(differs in: {diff}); use another --workdir, or pass --overwrite to '
                    'delete that run and start again'
                )
            delete = True
    sync('prepare_workdir_checked')
    if jax.process_index() == 0:
        if delete:
            names = (CHECKPOINT_DIR, DAMAGED_DIR, 'images', METRICS_FILE, EVAL_FILE)
            for name in (*names, NONFINITE_FILE, WINDOW_FILE, TRACKERS_FILE):
                path = workdir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            for path in workdir.glob('events.out.tfevents.*'):
                path.unlink()
        write_json(config_path, new, sort_keys=True)
    sync('prepare_workdir_written')


def drop_unset(tree: dict) -> dict:
    """The config without None leaves and empty sub-dicts (unset placeholders)."""
    out = {}
    for k, v in tree.items():
        v = drop_unset(v) if isinstance(v, dict) else v
        if v is not None and v != {}:
            out[k] = v
    return out


def write_json(path: Path, value: Any, **kwargs) -> None:
    """Writes JSON atomically (a temporary file renamed over `path`): never a partial file."""
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(value, indent=2, default=json_default, **kwargs))
    tmp.replace(path)


def config_diff(old: dict, new: dict, prefix: str = '') -> str:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k, '<missing>'), new.get(k, '<missing>')
        if isinstance(a, dict) and isinstance(b, dict):
            sub = config_diff(a, b, f'{prefix}{k}.')
            if sub:
                out.append(sub)
        elif a != b:
            out.append(f'{prefix}{k}: {a!r} -> {b!r}')
    return ', '.join(out)


def sync(name: str) -> None:
    """A barrier across processes (a no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


class MetricsLog:
    """metrics.jsonl (one JSON object per log step), and the same rows to other writers.

    The other writers (TensorBoard, MLflow, W&B: vae_jax/writers.py) get each row after it is in
    metrics.jsonl, the pictures, and the final eval.json. With several processes only process 0
    writes; the others hold a log that writes nothing.
    """

    def __init__(
        self,
        workdir: Path,
        resume_step: int,
        *,
        final_step: int | None = None,
        writers: Sequence[Any] = (),
    ):
        """Opens the log, keeping the rows that the checkpoint at `resume_step` accounts for.

        Args:
          workdir: the run directory.
          resume_step: the step of the checkpoint the run resumes from (0 for a fresh run).
          final_step: config.num_train_steps; its eval/* row is written after the final
            checkpoint, so a run resumed at that step drops it and writes it again.
          writers: opened writers (`writers.open_writers`), fed what this log is fed; closed
            with it.

        Raises:
          RuntimeError: metrics.jsonl has an unreadable line other than a partial last line.
        """
        self.path = workdir / METRICS_FILE
        self.enabled = jax.process_index() == 0
        self.writers = list(writers) if self.enabled else []
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

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open('a') as f:
            f.write(json.dumps({'step': step, **metrics}, default=json_default) + '\n')
        for writer in self.writers:
            writer.write_scalars(step, metrics)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """A picture [H, W, 3] uint8, for the writers (metrics.jsonl holds no pictures)."""
        for writer in self.writers:
            writer.write_image(tag, image, step)

    def summary(self, result: dict[str, Any]) -> None:
        """The final evaluation (eval.json's contents), for the writers."""
        for writer in self.writers:
            writer.write_summary(result)

    def close(self, status: str = 'finished') -> None:
        """Closes the writers (status: 'finished', 'stopped' or 'failed'); again: a no-op."""
        writers, self.writers = self.writers, []
        for writer in writers:
            writer.close(status)


def restore_window(workdir: Path, step: int) -> tuple[dict[str, float], int]:
    """The metric sums and start of the log window that was open at the checkpoint `step`."""
    path = workdir / WINDOW_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        if saved['step'] == step:
            return saved['sums'], saved['window_start']
    return {}, step


def save_window(workdir: Path, step: int, window_start: int, sums: dict[str, float]) -> None:
    if sums and jax.process_index() == 0:
        write_json(
            workdir / WINDOW_FILE, {'step': step, 'window_start': window_start, 'sums': sums}
        )
