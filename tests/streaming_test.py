"""The streamed input pipeline: same rows as the device path, same parameters, resumable, sharded.

Real TFDS data are read from $TFDS_DATA_DIR, else ../shared/data/tfds (skipped where absent). The
two-process test splits XLA's CPU platform into devices in subprocesses, as
tests/multidevice_test.py does.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import ml_collections
import multiprocess_testing
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import checkpoints, config_validation, data, row_sources, streaming, trainer

REPO = Path(__file__).resolve().parents[1]
_TFDS_DIR = Path(
    os.environ.get('TFDS_DATA_DIR') or Path(__file__).resolve().parents[2] / 'shared/data/tfds'
)


def _require_mnist(test):
    if not (_TFDS_DIR / 'mnist').is_dir():
        test.skipTest(f'{_TFDS_DIR}/mnist is absent (set $TFDS_DATA_DIR to a prepared TFDS dir).')


def _mnist_config(pipeline):
    """A small dense VAE on 6,000 MNIST images: 93 steps per epoch of batch 64.

    The runs stop at `_STEPS` (a checkpoint, no final evaluation or pictures: seconds saved).
    """
    c = test_config.get_config()
    c.input.dataset, c.input.data_dir, c.input.pipeline = 'mnist', str(_TFDS_DIR), pipeline
    c.input.num_train_examples, c.input.num_test_examples = 6000, 200
    c.input.batch_size = 64
    c.num_train_steps, c.steps_per_call = 400, 50
    c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 50, 300, 150
    c.eval_k_samples = (1,)
    return c


_STEPS = 300


def _params(workdir, config):
    state, step = checkpoints.load(workdir, trainer.Run(config).create_train_state())
    return jax.device_get(state.params), step


def _loss_rows(workdir):
    rows = [json.loads(line) for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
    return [(r['step'], r['train/loss']) for r in rows if 'train/loss' in r]


def _class_tempdir(cls):
    path = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.addClassCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


class PipelineChoiceTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('auto_fits', 'auto', 1.0, 10**9, 'device'),
        ('auto_too_large', 'auto', 1.0, 10**9 + 1, 'stream'),
        ('auto_built_in_memory', 'auto', 0.0, None, 'device'),
        ('stream_whatever_the_size', 'stream', 100.0, 10, 'stream'),
        ('device_whatever_the_size', 'device', 0.0, 10**12, 'device'),
    )
    def test_choose_pipeline(self, pipeline, budget_gb, train_bytes, expected):
        config = ml_collections.ConfigDict(dict(pipeline=pipeline, device_budget_gb=budget_gb))
        self.assertEqual(streaming.choose_pipeline(config, train_bytes), expected)

    @parameterized.named_parameters(
        (
            'unknown_pipeline',
            'pipeline',
            'disk',
            r"config\.input\.pipeline='disk' is invalid; "
            r"allowed: 'device' \| 'stream' \| 'auto'",
        ),
        (
            'negative_budget',
            'device_budget_gb',
            -1.0,
            r'config\.input\.device_budget_gb=-1\.0 '
            r'is invalid; allowed: a finite number >= 0',
        ),
    )
    def test_bad_values_name_the_key(self, key, value, pattern):
        config = test_config.get_config()
        config.input[key] = value
        with self.assertRaisesRegex(ValueError, pattern):
            config_validation.validate(config)

    def test_mnist_split_size_from_the_headers(self):
        _require_mnist(self)
        config = _mnist_config('auto')
        # MNIST is held as uint8 (one byte a pixel) until the step.
        self.assertEqual(streaming.train_split_bytes(config.input), 6000 * 784)
        config.input.num_train_examples = None
        self.assertEqual(streaming.train_split_bytes(config.input), 60000 * 784)

    def test_vectorised_sweep_refuses_a_streamed_pipeline_before_writing(self):
        config = test_config.get_config()
        config.input.pipeline = 'stream'
        run = trainer.Run(config)
        self.assertEqual(run.pipeline, 'stream')
        config_b = test_config.get_config()
        config_b.input.pipeline, config_b.seed = 'stream', 1
        root = Path(self.create_tempdir().full_path)
        dirs = {'a': root / 'a', 'b': root / 'b'}
        with self.assertRaisesRegex(
            ValueError, r"input\.pipeline='stream'.*vectorised sweep.*allowed: input\.pipeline="
        ):
            trainer.train_models({'a': run, 'b': run.for_config(config_b)}, dirs)
        self.assertFalse(any(d.exists() for d in dirs.values()))

    def test_evaluation_reads_the_test_split_alone(self):
        _require_mnist(self)
        config = _mnist_config('device')
        train, test = data.get_datasets(config.input)
        split, num_train = row_sources.evaluation_split(config.input, 'test')
        self.assertEqual(num_train, len(train['image']))  # 6,000: the truncation holds.
        np.testing.assert_array_equal(split['image'], test['image'])
        np.testing.assert_array_equal(split['label'], test['label'])
        config.input.num_train_examples = None
        self.assertEqual(row_sources.evaluation_split(config.input, 'test')[1], 60000)


class NpzSourceTest(absltest.TestCase):
    def _write(self, save, images):
        path = os.path.join(self.create_tempdir().full_path, 'data.npz')
        labels = np.arange(len(images)) % 3
        save(
            path,
            train_images=images,
            test_images=images[:5],
            train_labels=labels,
            test_labels=labels[:5],
        )
        return path

    def test_uncompressed_member_is_memory_mapped_with_the_stored_values(self):
        images = np.random.default_rng(0).integers(0, 256, (40, 6, 5, 2), np.uint8)
        path = self._write(np.savez, images)
        mapped = row_sources.npz_member(path, path, 'train_images')
        self.assertIsInstance(mapped, np.memmap)
        np.testing.assert_array_equal(mapped, images)
        # The streamed rows equal the rows of the split data.get_datasets loads.
        config = test_config.get_config()
        config.input.dataset, config.input.path, config.input.pipeline = 'npz', path, 'stream'
        config.input.num_test_examples = 4
        train, test = data.get_datasets(config.input)
        source = row_sources.FileSource(config.input)
        rows = np.array([7, 0, 39, 7, 12])
        got_images, got_labels = source.read(rows)
        np.testing.assert_array_equal(got_images, train['image'][rows])
        np.testing.assert_array_equal(got_labels, train['label'][rows])
        streamed_test = row_sources.load_test_split(config.input)
        np.testing.assert_array_equal(streamed_test['image'], test['image'])
        np.testing.assert_array_equal(streamed_test['label'], test['label'])

    def test_split_size_counts_the_bytes_held_per_value(self):
        # uint8 and bool files are held as stored (one byte a value); float ones as float32.
        cases = {
            'uint8': np.zeros((40, 6, 5, 2), np.uint8),
            'bool': np.zeros((40, 6, 5, 2), np.bool_),
            'float64': np.zeros((40, 6, 5, 2), np.float64),
        }
        for name, images in cases.items():
            with self.subTest(name):
                config = test_config.get_config()
                config.input.dataset, config.input.path = 'npz', self._write(np.savez, images)
                config.input.pipeline = 'auto'
                itemsize = 4 if name == 'float64' else 1
                self.assertEqual(streaming.train_split_bytes(config.input), 40 * 60 * itemsize)

    def test_compressed_member_is_refused_with_what_to_do(self):
        path = self._write(np.savez_compressed, np.zeros((4, 3, 3, 1), np.uint8))
        with self.assertRaisesRegex(
            ValueError, r"'train_images' is compressed \(np\.savez_compressed\).*np\.savez"
        ):
            row_sources.npz_member(path, path, 'train_images')

    def test_static_binarization_is_refused_with_the_alternatives(self):
        path = self._write(np.savez, np.zeros((4, 3, 3, 1), np.uint8))
        config = test_config.get_config()
        config.input.dataset, config.input.path, config.input.binarize = 'npz', path, 'static'
        with self.assertRaisesRegex(ValueError, r"binarize='static'.*'dynamic'.*'device'"):
            row_sources.FileSource(config.input)


class MnistStreamTest(absltest.TestCase):
    """On-device and streamed runs of one config: same rows, same parameters, resumable."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not (_TFDS_DIR / 'mnist').is_dir():
            return  # Each test skips, saying why.
        # The uninterrupted runs the tests compare with.
        cls.device_dir, cls.stream_dir = _class_tempdir(cls), _class_tempdir(cls)
        for pipeline, workdir in (('device', cls.device_dir), ('stream', cls.stream_dir)):
            trainer.train_and_evaluate(_mnist_config(pipeline), workdir, stop_at_step=_STEPS)

    def setUp(self):
        super().setUp()
        _require_mnist(self)

    def test_streamed_rows_are_the_device_path_rows(self):
        device = trainer.Run(_mnist_config('device'))
        stream = trainer.Run(_mnist_config('stream'))
        self.assertEqual((device.pipeline, stream.pipeline), ('device', 'stream'))
        self.assertIsNone(stream.train_data)  # Read from the files, step by step.
        # 130 steps cross an epoch boundary (93 steps per epoch), started mid-epoch at 60.
        expected = streaming.device_permutation_rows(device, 60, 130)
        reader = streaming.StreamReader(
            stream.train_source,
            stream.data_key,
            batch_size=64,
            rows=slice(0, 64),
            start_step=60,
            stop_step=190,
            prefetch_steps=8,
        )
        try:
            for j in (0, 32, 33, 34, 129):
                np.testing.assert_array_equal(reader.step_rows(60 + j), expected[j])
            images, labels = reader.next_chunk(40)
        finally:
            reader.close()
        self.assertEqual(reader.rows_served, 40 * 64)
        rows = expected[:40]
        np.testing.assert_array_equal(images, device.train_data['image'][rows])
        np.testing.assert_array_equal(labels, device.train_data['label'][rows])
        np.testing.assert_array_equal(stream.test_data['image'], device.test_data['image'])

    def test_streamed_run_equals_device_run_bit_for_bit(self):
        config = _mnist_config('device')
        params, step = _params(self.stream_dir, config)
        expected, expected_step = _params(self.device_dir, config)
        self.assertEqual(step, expected_step)
        jax.tree.map(np.testing.assert_array_equal, params, expected)
        self.assertEqual(_loss_rows(self.stream_dir), _loss_rows(self.device_dir))

    def test_stopped_mid_epoch_and_resumed_equals_uninterrupted(self):
        workdir = self.create_tempdir().full_path
        # Step 150 is step 57 of the second epoch (93 steps each).
        result = trainer.train_and_evaluate(_mnist_config('stream'), workdir, stop_at_step=150)
        self.assertEqual(result, {'step': 150})
        trainer.train_and_evaluate(_mnist_config('stream'), workdir, stop_at_step=_STEPS)
        config = _mnist_config('device')
        params, _ = _params(workdir, config)
        expected, _ = _params(self.stream_dir, config)
        jax.tree.map(np.testing.assert_array_equal, params, expected)
        self.assertEqual(_loss_rows(workdir), _loss_rows(self.stream_dir))

    def test_device_run_resumed_streamed_equals_device_run(self):
        # input.pipeline may change when a run resumes: both read the same batches.
        workdir = self.create_tempdir().full_path
        trainer.train_and_evaluate(_mnist_config('device'), workdir, stop_at_step=150)
        trainer.train_and_evaluate(_mnist_config('stream'), workdir, stop_at_step=_STEPS)
        config = _mnist_config('device')
        params, _ = _params(workdir, config)
        expected, _ = _params(self.device_dir, config)
        jax.tree.map(np.testing.assert_array_equal, params, expected)


# One process of a two-process run: configs/test.py streamed, stopped at step 6 (a checkpoint; no
# final evaluation), then the rows each of its readers served.
_TWO_PROCESSES = (
    multiprocess_testing.PRELUDE
    + r"""
import json, os
from vae_jax import streaming, train, trainer

jax.distributed.initialize(**train.distributed_init_args(os.environ))
sys.path.insert(0, os.path.join(os.getcwd(), 'tests'))  # and its helper modules
import streaming_test

readers = []
original = streaming.StreamReader.__init__


def init(self, *args, **kwargs):
    original(self, *args, **kwargs)
    readers.append(self)


streaming.StreamReader.__init__ = init
workdir = sys.argv[1]
trainer.train_and_evaluate(streaming_test._small_config('stream'), workdir, stop_at_step=6)
served = [(r.rows.start, r.rows.stop, r.rows_served) for r in readers]
with open(os.path.join(workdir, '..', f'rows{jax.process_index()}.json'), 'w') as f:
    json.dump(served, f)
"""
)


def _small_config(pipeline):
    """configs/test.py (digits, batch 16) to step 6 of 12, without TensorBoard files."""
    config = test_config.get_config()
    config.eval_k_samples, config.input.pipeline, config.logging.writers = (1,), pipeline, 'jsonl'
    return config


@pytest.mark.slow
class TwoProcessTest(absltest.TestCase):
    def test_each_process_reads_its_half_and_the_result_matches_one_process(self):
        config = _small_config('device')
        reference = self.create_tempdir().full_path
        # One process, one device, on device.
        trainer.train_and_evaluate(config, reference, stop_at_step=6)
        root = self.create_tempdir().full_path
        workdir = os.path.join(root, 'run')
        multiprocess_testing.run_two_processes(
            self, _TWO_PROCESSES, [workdir], multiprocess_testing.device_env(2)
        )
        # Batch 16 over 4 devices: each process holds its 2 devices' 8 rows of every batch.
        served = [json.loads(Path(root, f'rows{i}.json').read_text()) for i in range(2)]
        self.assertEqual(served, [[[0, 8, 6 * 8]], [[8, 16, 6 * 8]]])
        params, step = _params(workdir, config)
        expected, expected_step = _params(reference, config)
        self.assertEqual(step, expected_step)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, expected
        )
        rows, want = _loss_rows(workdir), _loss_rows(reference)
        self.assertEqual([s for s, _ in rows], [3, 6])
        self.assertEqual([s for s, _ in rows], [s for s, _ in want])
        np.testing.assert_allclose([v for _, v in rows], [v for _, v in want], rtol=2e-5)


if __name__ == '__main__':
    absltest.main()
