"""Where a run's log rows go besides metrics.jsonl: TensorBoard, MLflow and Weights & Biases.

    python -m vae_jax.train --config configs/default.py --workdir runs/x \
        --config.logging.writers=jsonl,tensorboard,mlflow,wandb

metrics.jsonl is the run's record (resume, the pictures' curves and scripts/aggregate.py read it),
so `jsonl` is always on; the other writers are fed the same rows (`run_files.MetricsLog`): each
gets the flattened config as parameters when it opens, the same scalars at the same steps as
metrics.jsonl, the pictures, and the final eval.json numbers (as `test/<name>`). Writers see
host floats after the jitted call, so none of them changes what is computed.

- `tensorboard`: event files in the run directory (tensorboardX; the default with `jsonl`).
- `mlflow` (`pip install 'vae_jax[mlflow]'`): one MLflow run per run directory, in
  `logging.mlflow.tracking_uri`; unset: `$MLFLOW_TRACKING_URI`, else a SQLite store
  `<workdir>/mlflow.db` with artifacts in `<workdir>/mlartifacts` (MLflow's local store; its
  `file:` store is in maintenance mode and refuses to open unless MLFLOW_ALLOW_FILE_STORE=true).
  Browse it with `mlflow ui --backend-store-uri sqlite:///runs/x/mlflow.db`.
- `wandb` (`pip install 'vae_jax[wandb]'`): one W&B run per run directory, in
  `logging.wandb.project` / `entity`; `logging.wandb.mode` unset honours `$WANDB_MODE`
  (online unless set; `offline` writes `<workdir>/wandb/` for a later `wandb sync`).

A vectorised sweep (vae_jax/sweep.py) opens one tracker run per model; the models share the
sweep directory's store (MLflow) and are grouped by its name (W&B). The tracker runs' ids are
kept in `<run dir>/trackers.json`, so a resumed run continues the same tracker run; steps the
tracker already holds (logged after the last checkpoint of a killed run) are not sent twice.
Only process 0 writes. A writer that fails (a tracking server gone, a full disk) is one logged
warning and is dropped for the rest of the run; training and metrics.jsonl go on. A tracker's
package that is not installed is an ImportError at start, naming the extra to install.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from absl import logging

from vae_jax import run_files
from vae_jax.writer_config import (  # noqa: F401 -- re-exported: writers.validate etc.
    EXTRAS,
    WANDB_MODES,
    WRITERS,
    parse,
    validate,
)

# How a run's writers end: the loop finished, was stopped to resume later, or diverged.
STATUSES = ('finished', 'stopped', 'failed')
MLFLOW_STATUS = {'finished': 'FINISHED', 'stopped': 'KILLED', 'failed': 'FAILED'}
_MLFLOW_BATCH = 100  # MLflow's limit of params per log_batch call (metrics: 1000).


class Writer(Protocol):
    """What a writer is fed (besides its config, given when it opens)."""

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None: ...

    def write_image(self, tag: str, image: np.ndarray, step: int) -> None: ...

    def write_summary(self, result: dict[str, Any]) -> None: ...

    def close(self, status: str) -> None: ...


def require_trackers(config: ml_collections.ConfigDict) -> None:
    """Imports the trackers `config.logging.writers` asks for: at the start of training, so a
    missing package stops the run before anything is written (loading a run needs none).

    Raises:
      ImportError: a tracker's package is not installed (naming the extra to install).
    """
    for name in parse(config.logging.writers):
        if name in EXTRAS:
            import_tracker(name)


def import_tracker(name: str) -> Any:
    """The tracker's module, imported now (only when a run asks for it).

    Raises:
      ImportError: the package is not installed; the message names the extra.
    """
    module, extra = EXTRAS[name]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f'config.logging.writers asks for {name!r}, but the package {module!r} is not '
            f"installed ({e}); install the extra: pip install 'vae_jax[{extra}]' (or leave "
            f'{name} out of config.logging.writers)'
        ) from e


def flat_params(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as config.json stores it, flattened: {'model.latent_dim': 8, ...}."""
    out = {}

    def walk(tree: dict, prefix: str) -> None:
        for k, v in tree.items():
            if isinstance(v, dict) and v:
                walk(v, f'{prefix}{k}.')
            else:
                out[f'{prefix}{k}'] = v

    walk(run_files.stored_config(config), '')
    return out


def param_text(value: Any) -> str:
    """A parameter as text (MLflow's params are strings): strings as they are, else JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def summary_numbers(result: dict[str, Any]) -> dict[str, float]:
    """eval.json's numbers as 'test/<name>' ('test/<name>/<key>' one dict level down)."""
    out = {}
    for k, v in result.items():
        items = v.items() if isinstance(v, dict) else [(None, v)]
        for inner, value in items:
            if isinstance(value, int | float | np.number) and not isinstance(value, bool):
                out[f'test/{k}' if inner is None else f'test/{k}/{inner}'] = float(value)
    return out


class Guarded:
    """A writer whose failures are one logged warning each run, never an exception.

    After its first failure the writer is dropped: its tracker run misses the rest of the rows,
    while training and metrics.jsonl go on.
    """

    def __init__(self, name: str, workdir: Path, open_fn):
        self.name, self.workdir, self.inner = name, workdir, None
        self._call(lambda: setattr(self, 'inner', open_fn()), opening=True)

    def _call(self, fn, *, opening: bool = False) -> None:
        if self.inner is None and not opening:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 (a tracker must never cost the run)
            self.inner = None
            logging.warning(
                '%s: the %s writer failed and is off for the rest of this run (metrics.jsonl '
                'goes on): %s: %s',
                self.workdir,
                self.name,
                type(e).__name__,
                e,
            )

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self._call(lambda: self.inner.write_scalars(step, scalars))

    def write_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self._call(lambda: self.inner.write_image(tag, image, step))

    def write_summary(self, result: dict[str, Any]) -> None:
        self._call(lambda: self.inner.write_summary(result))

    def close(self, status: str) -> None:
        self._call(lambda: self.inner.close(status))
        self.inner = None


def open_writers(
    config: ml_collections.ConfigDict,
    workdir: Path,
    resume_step: int,
    *,
    root: Path | None = None,
) -> list[Guarded]:
    """The writers `config.logging.writers` asks for, other than jsonl, opened for `workdir`.

    Args:
      config: the run's config.
      workdir: the run directory (trackers.json, TensorBoard events).
      resume_step: the step the run resumes from (0: a fresh run).
      root: the program's directory: a sweep's directory for its models (their shared MLflow
        store and W&B group), else None (the run directory).

    Returns:
      The writers, each `Guarded`; none on processes other than 0.
    """
    if jax.process_index() != 0:
        return []
    workdir = Path(workdir)
    root = workdir if root is None else Path(root)
    params = flat_params(config)
    classes = {'tensorboard': TensorBoardWriter, 'mlflow': MlflowWriter, 'wandb': WandbWriter}
    out = []
    for name in parse(config.logging.writers):
        if name in classes:
            cls = classes[name]
            out.append(
                Guarded(name, workdir, lambda c=cls: c(config, workdir, root, params, resume_step))
            )
    return out


def _read_ids(workdir: Path) -> dict[str, Any]:
    path = workdir / run_files.TRACKERS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _write_ids(workdir: Path, name: str, ids: dict[str, Any]) -> None:
    run_files.write_json(workdir / run_files.TRACKERS_FILE, {**_read_ids(workdir), name: ids})


class TensorBoardWriter:
    """TensorBoard event files in the run directory (tensorboardX: no TensorFlow needed)."""

    def __init__(self, config, workdir: Path, root: Path, params: dict, resume_step: int):
        del config, root
        import tensorboardX

        self.tb = tensorboardX.SummaryWriter(str(workdir))
        if resume_step == 0:
            rows = '\n'.join(f'| {k} | {param_text(v)} |' for k, v in params.items())
            self.tb.add_text('config', '| key | value |\n|---|---|\n' + rows, 0)

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def write_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.tb.add_image(tag, image, step, dataformats='HWC')
        self.tb.flush()

    def write_summary(self, result: dict[str, Any]) -> None:
        del result  # Its numbers are the eval/* scalars of the final step already.

    def close(self, status: str) -> None:
        del status
        self.tb.close()


class MlflowWriter:
    """One MLflow run per run directory, through `mlflow.MlflowClient` (no global active run,
    so the models of a sweep log side by side)."""

    def __init__(self, config, workdir: Path, root: Path, params: dict, resume_step: int):
        del resume_step  # The tracker's own history says which steps it holds.
        mlflow = import_tracker('mlflow')
        settings = config.logging.mlflow
        saved = _read_ids(workdir).get('mlflow')
        # Unset: a resumed run keeps its store (a sweep's model resumed on its own included).
        uri = (
            settings.tracking_uri
            or os.environ.get('MLFLOW_TRACKING_URI')
            or (saved or {}).get('tracking_uri')
        )
        artifacts = None
        if not uri:
            root.mkdir(parents=True, exist_ok=True)
            uri = f'sqlite:///{root.resolve() / "mlflow.db"}'
            artifacts = (root.resolve() / 'mlartifacts').as_uri()
        self.client = client = mlflow.MlflowClient(tracking_uri=uri)
        self.entities = mlflow.entities
        self.logged: dict[str, int] = {}  # metric -> the last step the tracker holds
        if saved and saved.get('tracking_uri') == uri:
            self.run_id = saved['run_id']
            run = client.get_run(self.run_id)
            for key in run.data.metrics:
                history = client.get_metric_history(self.run_id, key)
                self.logged[key] = max(m.step for m in history)
            client.update_run(self.run_id, status='RUNNING')
            old = run.data.params
        else:
            experiment = client.get_experiment_by_name(settings.experiment)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else client.create_experiment(settings.experiment, artifact_location=artifacts)
            )
            tags = {'vae_jax.workdir': str(workdir.resolve())}
            if root != workdir:
                tags['vae_jax.sweep'] = str(root.resolve())
            run = client.create_run(experiment_id, run_name=workdir.name, tags=tags)
            self.run_id = run.info.run_id
            _write_ids(workdir, 'mlflow', {'tracking_uri': uri, 'run_id': self.run_id})
            old = {}
        # MLflow refuses to change a param: a resume with a new run length keeps the first value.
        new = [self.entities.Param(k, param_text(v)) for k, v in params.items() if k not in old]
        for i in range(0, len(new), _MLFLOW_BATCH):
            client.log_batch(self.run_id, params=new[i : i + _MLFLOW_BATCH])

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [
            self.entities.Metric(k, float(v), now, step)
            for k, v in scalars.items()
            if step > self.logged.get(k, -1)
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
            for m in metrics:
                self.logged[m.key] = step

    def write_image(self, tag: str, image: np.ndarray, step: int) -> None:
        del step
        self.client.log_image(self.run_id, np.asarray(image), artifact_file=f'{tag}.png')

    def write_summary(self, result: dict[str, Any]) -> None:
        self.write_scalars(int(result['step']), summary_numbers(result))
        plain = json.loads(json.dumps(result, default=run_files.json_default))
        self.client.log_dict(self.run_id, plain, run_files.EVAL_FILE)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, MLFLOW_STATUS[status])


class WandbWriter:
    """One W&B run per run directory (`reinit='create_new'`: a sweep's runs log side by side)."""

    def __init__(self, config, workdir: Path, root: Path, params: dict, resume_step: int):
        del resume_step
        wandb = import_tracker('wandb')
        self.wandb = wandb
        settings = config.logging.wandb
        saved = _read_ids(workdir).get('wandb')
        run_id = saved['id'] if saved else secrets.token_hex(4)  # W&B ids: [a-z0-9]
        root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            mode=settings.mode,  # None: wandb reads $WANDB_MODE
            id=run_id,
            resume='allow',
            name=workdir.name,
            group=root.name if root != workdir else None,
            dir=None if os.environ.get('WANDB_DIR') else str(root.resolve()),
            reinit='create_new',
        )
        self.run.config.update(params, allow_val_change=True)
        if not saved:
            _write_ids(workdir, 'wandb', {'id': run_id, 'project': settings.project})

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        # A resumed online run starts after the last step W&B holds; older steps are not resent.
        if step >= self.run.step:
            self.run.log({k: float(v) for k, v in scalars.items()}, step=step)

    def write_image(self, tag: str, image: np.ndarray, step: int) -> None:
        if step >= self.run.step:
            self.run.log({tag: self.wandb.Image(np.asarray(image))}, step=step)

    def write_summary(self, result: dict[str, Any]) -> None:
        numbers = summary_numbers(result)
        self.run.summary.update({k: v for k, v in numbers.items() if math.isfinite(v)})

    def close(self, status: str) -> None:
        self.run.finish(exit_code=1 if status == 'failed' else 0)
