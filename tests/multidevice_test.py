"""Data parallelism: one code path for 1 device, 4 devices, and 2 processes x 2 devices.

XLA's CPU platform is split into several devices with
`XLA_FLAGS=--xla_force_host_platform_device_count=N`, which must be set before JAX starts, so
those runs are subprocesses; this process (1 CPU device) trains the reference.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import multiprocess_testing
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import checkpoints, sweep, train, trainer

REPO = Path(__file__).resolve().parents[1]

_PRELUDE = multiprocess_testing.PRELUDE + 'import json, os\n'

# Trains configs/test.py on every device of this process, recording how each training batch is
# laid out across devices (inside the jitted chunk) and how the parameters are.
_FOUR_DEVICES = (
    _PRELUDE
    + r"""
import re

import jax.numpy as jnp
from configs import test as test_config
from pathlib import Path

from vae_jax import checkpoints, steps, trainer

layouts = []
original = steps.train_step


def train_step(state, images, labels, *args, **kwargs):
    for name, x in (('images', images), ('labels', labels)):
        jax.debug.inspect_array_sharding(
            x, callback=lambda s, name=name, x=x: layouts.append(
                [name, s.shard_shape(x.shape), len(s.device_set), s.is_fully_replicated]
            )
        )
    return original(state, images, labels, *args, **kwargs)


steps.train_step = train_step
config = test_config.get_config()
config.num_train_steps, config.eval_k_samples = 6, (1,)  # As _config() in the test.
workdir = sys.argv[1]
trainer.train_and_evaluate(config, workdir)
trained_layouts = list(layouts)  # Before the chunk below is compiled again.
run = trainer.Run(config)
state = checkpoints.restore_latest(
    checkpoints.checkpoint_manager(Path(workdir), 3), run.create_train_state()
)[0]
params = jax.tree.leaves(state.params)
images, labels = run.device_split()  # As the trainer holds the split.
perm_epoch = jnp.asarray(0, jnp.int32)
chunk = run.chunk_fn.lower(
    state, run.permutation_fn(perm_epoch), perm_epoch, images, labels, run.loop_key,
    run.data_key, jnp.asarray(1.0, jnp.float32), num_steps=config.steps_per_call,
).compile().as_text()  # fmt: skip
bad_batch = test_config.get_config()
bad_batch.input.batch_size = 18
try:
    trainer.Run(bad_batch)
    message = None
except ValueError as e:
    message = str(e)
out = {
    'device_count': jax.device_count(),
    'layouts': trained_layouts,
    'params_replicated': all(p.sharding.is_fully_replicated for p in params),
    'params_shards': sorted({len(p.addressable_shards) for p in params}),
    'indivisible_batch': message,
    'num_train': run.num_train,
    'split_shards': sorted(list(s.data.shape) for s in images.addressable_shards),
    'label_shards': sorted(list(s.data.shape) for s in labels.addressable_shards),
    'all_gathers': [l for l in chunk.splitlines() if re.search(r'all-gather(-start)?\(', l)],
}
Path(workdir, 'layout.json').write_text(json.dumps(out))
"""
)

_CLI = (
    _PRELUDE
    + r"""
from vae_jax import cli, train

cli.run(train.main)  # As `python -m vae_jax.train`.
"""
)


# A vectorised sweep of two betas on every device of this process, recording how the train split
# is held (vae_jax/sharded_data.py).
_FOUR_DEVICE_SWEEP = (
    _PRELUDE
    + r"""
from pathlib import Path

from configs import test as test_config
from vae_jax import sharded_data, sweep

held = []
original = sharded_data.put_split


def put_split(*args, **kwargs):
    images, labels = original(*args, **kwargs)
    held.append(sorted(list(s.data.shape) for s in images.addressable_shards))
    return images, labels


sharded_data.put_split = put_split
config = test_config.get_config()
config.num_train_steps, config.eval_k_samples = 6, (1,)  # As _config() in the test.
config.sweep.beta = sys.argv[2]
sweep.train_and_evaluate(config, sys.argv[1])
Path(sys.argv[1], 'held.json').write_text(json.dumps(held))
"""
)

# As _CLI, recording the row indices this process reads from the data set's files.
_CLI_COUNTING_READS = (
    _PRELUDE
    + r"""
from pathlib import Path

from vae_jax import cli, streaming, train

read = []
original = streaming.FileSource.read


def counting_read(self, rows):
    read.extend(int(r) for r in rows)
    return original(self, rows)


streaming.FileSource.read = counting_read
try:
    cli.run(train.main)  # As `python -m vae_jax.train`.
finally:
    name = f'rows_read_{os.environ["JAX_PROCESS_ID"]}.json'
    Path(os.environ['ROWS_READ_DIR'], name).write_text(json.dumps(read))
"""
)


def _rows(workdir):
    out = []
    for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines():
        row = json.loads(line)
        row.pop('train/steps_per_sec', None)
        out.append(row)
    return out


# configs/test.py, shortened: two log rows and one (cheaper) evaluation.
_FLAGS = ('--config.num_train_steps=6', '--config.eval_k_samples=(1,)')


def _config():
    config = test_config.get_config()
    config.num_train_steps, config.eval_k_samples = 6, (1,)
    return config


def _params(workdir, config=None):
    config = _config() if config is None else config
    state, step = checkpoints.load(workdir, trainer.Run(config).create_train_state())
    return jax.device_get(state.params), step


def _class_tempdir(cls):
    """A temporary directory that lives as long as the test class (removed by its cleanup)."""
    path = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.addClassCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _assert_same_run(test, workdir, reference, config=None):
    """Same metrics rows and parameters as the 1-device run, within float tolerance."""
    rows, expected = _rows(workdir), _rows(reference)
    test.assertEqual([sorted(r) for r in rows], [sorted(r) for r in expected])
    for row, want in zip(rows, expected, strict=True):
        for key, value in want.items():
            np.testing.assert_allclose(row[key], value, rtol=2e-5, atol=1e-6, err_msg=key)
    params, step = _params(workdir, config)
    expected_params, expected_step = _params(reference, config)
    test.assertEqual(step, expected_step)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        params,
        expected_params,
    )


def _two_processes(test, workdir, flags, code=_CLI, **env):
    """Trains configs/test.py with `flags` in two processes of two devices each, through `code`
    (`_CLI`, or a variant) with `env` added; returns their standard outputs."""
    args = ['--config', 'configs/test.py', '--workdir', workdir, *flags]
    return multiprocess_testing.run_two_processes(
        test, code, args, multiprocess_testing.device_env(2, **env)
    )


class DataParallelTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        assert jax.device_count() == 1, 'the reference must run on one device'
        cls.reference = _class_tempdir(cls)
        trainer.train_and_evaluate(_config(), cls.reference)

    def assert_same_run(self, workdir):
        _assert_same_run(self, workdir, self.reference)

    def test_four_devices_shard_the_batch_and_match_one_device(self):
        workdir = self.create_tempdir().full_path
        multiprocess_testing.run_script(self, _FOUR_DEVICES, [workdir], num_devices=4)
        layout = json.loads((Path(workdir) / 'layout.json').read_text())
        self.assertEqual(layout['device_count'], 4)
        # configs/test.py: batch 16 of 8x8x1 images -> 4 examples on each of the 4 devices.
        self.assertCountEqual(
            layout['layouts'], [['images', [4, 8, 8, 1], 4, False], ['labels', [4], 4, False]]
        )
        self.assertTrue(layout['params_replicated'])
        self.assertEqual(layout['params_shards'], [4])
        # The train split is sharded along examples: each device holds ceil(N / 4) rows (N =
        # 1437 digits, padded to 1440), not all N; and the compiled chunk never all-gathers it.
        self.assertEqual(layout['num_train'], 1437)
        self.assertEqual(layout['split_shards'], [[360, 8, 8, 1]] * 4)
        self.assertEqual(layout['label_shards'], [[360]] * 4)
        self.assertEqual([g for g in layout['all_gathers'] if '[1440' in g], [])
        self.assertRegex(
            layout['indivisible_batch'],
            r'input\.batch_size=18 must be divisible by the number of devices \(4\).*'
            r'allowed: a multiple of 4',
        )
        self.assert_same_run(workdir)

    @pytest.mark.slow
    def test_four_devices_train_a_sweep_on_the_sharded_split_as_one_device(self):
        root = Path(self.create_tempdir().full_path)
        config, betas = _config(), '0.5,2'
        config.sweep.beta = betas
        expected = sweep.train_and_evaluate(config, root / 'one_device')
        args = [str(root / 'four_devices'), betas]
        multiprocess_testing.run_script(self, _FOUR_DEVICE_SWEEP, args, num_devices=4)
        # The vmapped chunk gathers from the split sharded as for one model: 360 rows a device.
        held = json.loads((root / 'four_devices' / 'held.json').read_text())
        self.assertEqual(held, [[[360, 8, 8, 1]] * 4])
        self.assertLen(expected, 2)
        for name in expected:
            _assert_same_run(self, root / 'four_devices' / name, root / 'one_device' / name)

    @pytest.mark.slow
    def test_two_processes_of_two_devices_match_one_device(self):
        workdir = self.create_tempdir().full_path
        outputs = _two_processes(self, workdir, _FLAGS)
        self.assertIn('test ELBO', outputs[0])  # Process 0 writes and reports.
        self.assertNotIn('test ELBO', outputs[1])
        self.assert_same_run(workdir)


class ProcessShardTest(absltest.TestCase):
    """input.pipeline='device' with two processes: each reads and holds only its rows."""

    # 202 examples: 4 devices hold ceil(202 / 4) = 51 rows each (2 of them padding), so process
    # 0's devices hold rows 0 .. 101 and process 1's rows 102 .. 201 (and 2 padding rows).
    NUM_EXAMPLES = 202

    @pytest.mark.slow
    def test_two_processes_read_their_rows_only_and_match_one_device(self):
        rng = np.random.default_rng(0)
        tmp = self.create_tempdir().full_path
        path = os.path.join(tmp, 'data.npz')
        np.savez(  # Uncompressed: the processes read their rows from a memory map.
            path,
            train_images=rng.integers(0, 256, (self.NUM_EXAMPLES, 8, 8, 1), dtype=np.uint8),
            train_labels=rng.integers(0, 10, (self.NUM_EXAMPLES,)),
            test_images=rng.integers(0, 256, (100, 8, 8, 1), dtype=np.uint8),
            test_labels=rng.integers(0, 10, (100,)),
        )
        flags = (*_FLAGS, '--config.input.dataset=npz', f'--config.input.path={path}')
        config = _config()
        config.input.dataset, config.input.path = 'npz', path
        reference = os.path.join(tmp, 'one_device')
        trainer.train_and_evaluate(config, reference)
        workdir = os.path.join(tmp, 'two_processes')
        _two_processes(self, workdir, flags, code=_CLI_COUNTING_READS, ROWS_READ_DIR=tmp)
        read = [json.loads(Path(tmp, f'rows_read_{i}.json').read_text()) for i in range(2)]
        # Besides row 0, which every process's source reads once on opening (stored dtype, shape).
        self.assertEqual(sorted(read[0]), [0, *range(102)])
        self.assertEqual(sorted(read[1]), [0, *range(102, self.NUM_EXAMPLES)])
        _assert_same_run(self, workdir, reference, config)


class DistributedInitArgsTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('single_process', {}, None),
        (
            'explicit',
            {
                'JAX_COORDINATOR_ADDRESS': 'host0:1234',
                'JAX_NUM_PROCESSES': '4',
                'JAX_PROCESS_ID': '3',
            },
            {'coordinator_address': 'host0:1234', 'num_processes': 4, 'process_id': 3},
        ),
        (
            'explicit_one_process',
            {'JAX_COORDINATOR_ADDRESS': 'host0:1234', 'JAX_NUM_PROCESSES': '1'},
            None,
        ),
        # Cluster environments without the JAX_* variables: JAX's own detection decides.
        (
            'slurm_srun_with_several_tasks',
            {'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n[1-2]', 'SLURM_NTASKS': '8'},
            None,
        ),
        (
            'slurm_with_own_coordinator',
            {'JAX_COORDINATOR_ADDRESS': 'n1:1234', 'SLURM_NTASKS': '2', 'SLURM_PROCID': '0'},
            {'coordinator_address': 'n1:1234'},
        ),
        ('open_mpi', {'OMPI_COMM_WORLD_SIZE': '4'}, None),
        ('tpu_pod', {'TPU_WORKER_HOSTNAMES': 'a,b'}, None),
    )
    def test_environment(self, environ, expected):
        self.assertEqual(train.distributed_init_args(environ), expected)

    @parameterized.named_parameters(
        (
            'process_id_out_of_range',
            {'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '2'},
            r'JAX_PROCESS_ID=2 is invalid; allowed: 0 \.\. 1',
        ),
        (
            'not_an_integer',
            {'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': 'two'},
            r"JAX_NUM_PROCESSES='two' is invalid; allowed: an integer",
        ),
    )
    def test_bad_environment(self, environ, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            train.distributed_init_args(environ)

    def test_no_cluster_is_told_apart_by_jax_own_detection(self):
        # train.py runs a single process when jax.distributed.initialize() finds no cluster;
        # it recognises that case by this message, which this test pins.
        code = (
            'import jax\n'
            'try:\n    jax.distributed.initialize()\n'
            'except ValueError as e:\n    print(e)\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM', 'OMPI', 'JAX_'))}
        env.pop('KUBERNETES_SERVICE_HOST', None)
        out = subprocess.run(
            [sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120
        )
        self.assertIn(train._NO_CLUSTER, out.stdout, out.stderr)


if __name__ == '__main__':
    absltest.main()
