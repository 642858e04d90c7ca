"""The trackers (vae_jax/writers.py) against the real mlflow and wandb packages, offline.

MLflow writes its default SQLite store in a temporary run directory; W&B runs in offline mode
with every network route pointed at a closed local port. What they hold is read back with
MLflow's client API and, for W&B, from the offline run file (`run-<id>.wandb`: wandb's own
protocol buffers in LevelDB's log framing) and compared with metrics.jsonl, config.json and
eval.json.
"""

import json
import logging
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from unittest import mock

import jax
import mlflow
import numpy as np
from absl.testing import absltest, parameterized
from wandb.proto import wandb_internal_pb2

from configs import test as test_config
from vae_jax import checkpoints, run_files, sweep, trainer, writers

# No test may reach a network: W&B offline, and every route to a closed local port.
OFFLINE_ENV = {
    'WANDB_MODE': 'offline',
    'WANDB_SILENT': 'true',
    'WANDB_DISABLE_CODE': 'true',
    'WANDB_DISABLE_GIT': 'true',
    'WANDB_BASE_URL': 'http://127.0.0.1:9',
    'HTTP_PROXY': 'http://127.0.0.1:9',
    'HTTPS_PROXY': 'http://127.0.0.1:9',
    'MLFLOW_HTTP_REQUEST_MAX_RETRIES': '0',
    'MLFLOW_HTTP_REQUEST_TIMEOUT': '2',
}
UNSET_ENV = ('WANDB_API_KEY', 'WANDB_DIR', 'MLFLOW_TRACKING_URI', 'NO_PROXY', 'no_proxy')
ALL_WRITERS = 'jsonl,tensorboard,mlflow,wandb'


def _offline_env():
    env = {k: v for k, v in os.environ.items() if k not in UNSET_ENV}
    return mock.patch.dict(os.environ, {**env, **OFFLINE_ENV}, clear=True)


def _rows(workdir):
    lines = (Path(workdir) / run_files.METRICS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _series(rows):
    """{metric: [(step, value), ...]} of metrics.jsonl rows, in file order."""
    out = {}
    for row in rows:
        for k, v in row.items():
            if k != 'step':
                out.setdefault(k, []).append((row['step'], v))
    return out


def _flat_config(workdir):
    """config.json flattened to 'a.b' keys (written independently of writers.flat_params)."""
    out = {}

    def walk(tree, prefix):
        for k, v in tree.items():
            if isinstance(v, dict) and v:
                walk(v, f'{prefix}{k}.')
            else:
                out[prefix + k] = v

    walk(json.loads((Path(workdir) / run_files.CONFIG_FILE).read_text()), '')
    return out


def wandb_records(path):
    """The records of an offline W&B run file, parsed with wandb's protocol buffers.

    The file is a 7-byte header (':W&B', magic 0xBEE1, version) followed by LevelDB's log
    format: 32 KiB blocks of chunks, each a 7-byte header (checksum, uint16 length, type:
    1 full, 2 first, 3 middle, 4 last) and its bytes; a block's tail under 7 bytes is padding.
    """
    data = Path(path).read_bytes()
    assert data[:4] == b':W&B', data[:7]
    pos, block, pending = 7, 32768, b''
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack('<IHB', data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b''
            yield record


def _key(item):
    return item.key or '/'.join(item.nested_key)


def wandb_run(offline_dir):
    """(run id, config {key: value}, history {metric: [(step, value)]}, summary) of a run dir."""
    (path,) = Path(offline_dir).glob('run-*.wandb')
    run_id, config, history, summary = None, {}, {}, {}
    for record in wandb_records(path):
        kind = record.WhichOneof('record_type')
        if kind == 'run':
            run_id = record.run.run_id
            config.update({_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == 'config':
            config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == 'history':
            step = record.history.step.num
            for item in record.history.item:
                key = _key(item)  # W&B splits 'train/loss' into nested_key ['train', 'loss'].
                # Leave out W&B's own entries (_step, _runtime, ...) and the pictures' fields.
                if not key.startswith(('_', 'images/')):
                    history.setdefault(key, []).append((step, json.loads(item.value_json)))
        elif kind == 'summary':
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    config.pop('_wandb', None)
    return run_id, config, history, summary


def _params(workdir):
    config = test_config.get_config()
    state, _ = checkpoints.load(workdir, trainer.Run(config).create_train_state())
    return jax.device_get(state.params)


class TrackersTest(parameterized.TestCase):
    """One run with every writer on, stopped at step 6 and resumed; one with the defaults."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.enterClassContext(_offline_env())
        # A directory of this class's own: under pytest-xdist each worker that runs one of its
        # tests runs this setup, so a fixed path would be shared by two runs at once.
        root = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
        cls.addClassCleanup(shutil.rmtree, root, ignore_errors=True)
        cls.tracked, cls.plain = root / 'tracked', root / 'plain'
        config = test_config.get_config()
        config.logging.writers = ALL_WRITERS
        trainer.train_and_evaluate(config, cls.tracked, overwrite=True, stop_at_step=6)
        cls.eval = trainer.train_and_evaluate(config, cls.tracked)
        trainer.train_and_evaluate(test_config.get_config(), cls.plain, overwrite=True)
        cls.ids = json.loads((cls.tracked / run_files.TRACKERS_FILE).read_text())

    def test_every_writer_on_changes_neither_metrics_nor_parameters(self):
        def without_speed(rows):
            return [{k: v for k, v in r.items() if k != 'train/steps_per_sec'} for r in rows]

        self.assertEqual(without_speed(_rows(self.tracked)), without_speed(_rows(self.plain)))
        jax.tree.map(np.testing.assert_array_equal, _params(self.tracked), _params(self.plain))

    def test_mlflow_holds_the_config_and_every_series_once(self):
        self.assertEqual(self.ids['mlflow']['tracking_uri'], f'sqlite:///{self.tracked}/mlflow.db')
        client = mlflow.MlflowClient(self.ids['mlflow']['tracking_uri'])
        experiment = client.get_experiment_by_name('vae_jax')
        (run,) = client.search_runs([experiment.experiment_id])  # Resumed: still one run.
        self.assertEqual(run.info.run_id, self.ids['mlflow']['run_id'])
        self.assertEqual(run.info.status, 'FINISHED')
        expected = {
            k: v if isinstance(v, str) else json.dumps(v)
            for k, v in _flat_config(self.tracked).items()
        }
        self.assertEqual(run.data.params, expected)
        series = _series(_rows(self.tracked))
        logged = {k: v for k, v in run.data.metrics.items() if not k.startswith('test/')}
        self.assertEqual(set(logged), set(series))
        for key, values in series.items():
            history = client.get_metric_history(run.info.run_id, key)
            self.assertEqual(sorted((m.step, m.value) for m in history), values, key)
        numbers = {
            f'test/{k}': float(v)
            for k, v in self.eval.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.assertContainsSubset({'test/elbo', 'test/step', 'test/wall_time_sec'}, numbers)
        self.assertEqual({k: run.data.metrics[k] for k in numbers}, numbers)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        self.assertIn('eval.json', artifacts)
        images = {a.path for a in client.list_artifacts(run.info.run_id, 'images')}
        self.assertIn('images/reconstructions.png', images)

    def test_wandb_offline_run_holds_the_config_and_history_under_one_id(self):
        dirs = sorted((self.tracked / 'wandb').glob('offline-run-*'))
        self.assertLen(dirs, 2)  # The first invocation and the resumed one.
        runs = [wandb_run(d) for d in dirs]
        self.assertEqual({r[0] for r in runs}, {self.ids['wandb']['id']})
        self.assertEqual(runs[0][1], _flat_config(self.tracked))
        history = {}
        for _, _, part, _ in runs:
            for key, values in part.items():
                history.setdefault(key, []).extend(values)
        self.assertEqual(history, _series(_rows(self.tracked)))
        self.assertEqual(runs[1][3]['test/elbo'], self.eval['elbo'])
        picture = runs[1][3]['images/reconstructions/path']  # Logged at the end, in files/.
        self.assertTrue((dirs[1] / 'files' / picture).is_file(), picture)

    def test_mlflow_resumed_after_a_kill_does_not_resend_steps(self):
        # A run killed after logging step 9 resumes from its checkpoint at 6 and logs 9 again.
        config = test_config.get_config()
        config.logging.writers = 'jsonl,mlflow'
        config.logging.mlflow.tracking_uri = self.ids['mlflow']['tracking_uri']
        config.logging.mlflow.experiment = 'killed'
        workdir = Path(self.create_tempdir().full_path)
        for resume_step, steps in ((0, (3, 6, 9)), (6, (9, 12))):
            (writer,) = writers.open_writers(config, workdir, resume_step)
            for step in steps:
                writer.write_scalars(step, {'train/loss': float(step)})
            writer.close('finished' if resume_step else 'failed')
        client = mlflow.MlflowClient(config.logging.mlflow.tracking_uri)
        experiment = client.get_experiment_by_name('killed')
        (run,) = client.search_runs([experiment.experiment_id])
        history = client.get_metric_history(run.info.run_id, 'train/loss')
        self.assertEqual(sorted(m.step for m in history), [3, 6, 9, 12])


class SweepTrackersTest(parameterized.TestCase):
    def test_sweep_logs_one_tracker_run_per_model(self):
        self.enter_context(_offline_env())
        config = test_config.get_config()
        config.num_train_steps = 6
        config.sweep.seed = '0,1'
        config.logging.writers = 'jsonl,mlflow,wandb'
        workdir = Path(self.create_tempdir().full_path)
        sweep.train_and_evaluate(config, workdir)
        models = ['beta=1,seed=0', 'beta=1,seed=1']
        # MLflow: the models share the sweep directory's store, one run each.
        client = mlflow.MlflowClient(f'sqlite:///{workdir}/mlflow.db')
        experiment = client.get_experiment_by_name('vae_jax')
        runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
        self.assertCountEqual(runs, models)
        for name in models:
            ids = json.loads((workdir / name / run_files.TRACKERS_FILE).read_text())
            self.assertEqual(runs[name].info.run_id, ids['mlflow']['run_id'])
            self.assertEqual(runs[name].data.params['seed'], name[-1])
            history = client.get_metric_history(ids['mlflow']['run_id'], 'train/loss')
            expected = _series(_rows(workdir / name))['train/loss']
            self.assertEqual(sorted((m.step, m.value) for m in history), expected)
            # W&B: one offline run per model under the sweep directory.
            (offline,) = (workdir / 'wandb').glob(f'offline-run-*-{ids["wandb"]["id"]}')
            _, run_config, wandb_history, _ = wandb_run(offline)
            self.assertEqual(run_config['seed'], int(name[-1]))
            self.assertEqual(wandb_history['train/loss'], expected)


class WriterFailureTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.enter_context(_offline_env())

    @parameterized.named_parameters(('mlflow', 'mlflow'), ('wandb', 'wandb'))
    def test_missing_package_stops_the_start_naming_the_extra(self, name):
        config = test_config.get_config()
        config.logging.writers = f'jsonl,{name}'
        workdir = Path(self.create_tempdir().full_path) / 'run'
        # A None entry makes `import name` fail as if the package were not installed.
        with mock.patch.dict(sys.modules, {name: None}):
            with self.assertRaisesRegex(ImportError, rf"pip install 'vae_jax\[{name}\]'"):
                trainer.train_and_evaluate(config, workdir)
        self.assertFalse(workdir.exists())  # Nothing was written.

    @parameterized.named_parameters(
        ('unknown', 'jsonl,mlfow', 'unknown writers'),
        ('without_jsonl', 'tensorboard,mlflow', 'leaves out jsonl'),
        ('repeated', 'jsonl,jsonl', 'repeats'),
    )
    def test_bad_writer_list_is_a_clear_error(self, text, message):
        with self.assertRaisesRegex(ValueError, f'config.logging.writers=.*{message}'):
            writers.parse(text)

    def test_unreachable_tracking_server_is_one_warning_and_the_log_goes_on(self):
        config = test_config.get_config()
        config.logging.writers = 'jsonl,mlflow'
        config.logging.mlflow.tracking_uri = 'http://127.0.0.1:9'  # Nothing listens there.
        workdir = Path(self.create_tempdir().full_path)
        with self.assertLogs(level=logging.WARNING) as logs:
            log = run_files.MetricsLog(workdir, 0, writers=writers.open_writers(config, workdir, 0))
            log.write(3, {'train/loss': 1.5})
            log.close()
        self.assertLen(logs.records, 1)
        self.assertIn('the mlflow writer failed', logs.output[0])
        self.assertEqual(_rows(workdir), [{'step': 3, 'train/loss': 1.5}])

    def test_writer_failing_mid_run_warns_once_and_is_dropped(self):
        calls = []

        class GoneServer:
            def write_scalars(self, step, scalars):
                calls.append(step)
                if step >= 6:
                    raise ConnectionError('server gone')

        guarded = writers.Guarded('mlflow', Path('run'), GoneServer)
        workdir = Path(self.create_tempdir().full_path)
        log = run_files.MetricsLog(workdir, 0, writers=[guarded])
        with self.assertLogs(level=logging.WARNING) as logs:
            for step in (3, 6, 9):
                log.write(step, {'train/loss': float(step)})
            log.close()
        self.assertEqual(calls, [3, 6])
        self.assertLen(logs.records, 1)
        self.assertIn('ConnectionError: server gone', logs.output[0])
        self.assertEqual([r['step'] for r in _rows(workdir)], [3, 6, 9])


if __name__ == '__main__':
    absltest.main()
