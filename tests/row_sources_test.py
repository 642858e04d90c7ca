"""A split read where it is stored: the same rows as the loaded split, evaluated to the same bits.

`.npz` files are written in temporary dirs; real TFDS data are read from $TFDS_DATA_DIR, else
../shared/data/tfds (skipped where absent).
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import jax
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import data, evaluate, input_transform, pictures, row_sources, streaming, trainer

_TFDS_DIR = Path(
    os.environ.get('TFDS_DATA_DIR') or Path(__file__).resolve().parents[2] / 'shared/data/tfds'
)


class CountingSource:
    """A row source that records how many rows each read asked for."""

    def __init__(self, source):
        self.source, self.sizes = source, []
        self.dtype, self.row_shape = source.dtype, source.row_shape

    def __len__(self):
        return len(self.source)

    def read(self, rows):
        self.sizes.append(len(rows))
        return self.source.read(rows)


def _write_npz(directory, train_images, test_images, labels=True):
    path = os.path.join(directory, 'data.npz')
    arrays = dict(train_images=train_images, test_images=test_images)
    if labels:
        arrays['train_labels'] = np.arange(len(train_images)) % 3
        arrays['test_labels'] = (np.arange(len(test_images)) * 7) % 3
    np.savez(path, **arrays)
    return path


def _npz_config(path, pipeline='stream'):
    config = test_config.get_config()
    config.input.dataset, config.input.path, config.input.pipeline = 'npz', path, pipeline
    config.input.num_test_examples = None  # configs/test.py takes 100.
    return config


def _random_images(kind, shape):
    rng = np.random.default_rng(0)
    if kind == 'uint8':
        return rng.integers(0, 256, shape, np.uint8)
    if kind == 'bool':
        return rng.random(shape) < 0.3
    return rng.random(shape)  # float64 in [0, 1): held as float32


def _assert_view_matches(test, view, loaded):
    """`view` reads the rows of the loaded array `loaded`, bit for bit, however it is indexed."""
    test.assertEqual((view.shape, view.dtype, view.ndim), (loaded.shape, loaded.dtype, loaded.ndim))
    test.assertLen(view, len(loaded))
    np.testing.assert_array_equal(np.asarray(view), loaded, strict=True)
    rows = np.array([5, 0, -1, 5, len(loaded) - 2])
    np.testing.assert_array_equal(view[rows], loaded[rows], strict=True)
    np.testing.assert_array_equal(view[7], loaded[7], strict=True)
    np.testing.assert_array_equal(view[3:20:2][[0, 4]], loaded[3:20:2][[0, 4]], strict=True)
    mask = np.arange(len(loaded)) % 4 == 1
    np.testing.assert_array_equal(view[mask], loaded[mask], strict=True)
    np.testing.assert_array_equal(np.asarray(view[-6:]), loaded[-6:], strict=True)


class NpzViewTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('uint8', 'uint8', (60, 6, 5, 2), False),
        ('bool', 'bool', (60, 6, 5, 1), False),
        ('float', 'float', (60, 6, 5, 1), False),
        ('uint8_hw_padded', 'uint8', (60, 7, 9), True),
    )
    def test_view_rows_equal_the_loaded_split(self, kind, shape, pad):
        images = _random_images(kind, shape)
        path = _write_npz(self.create_tempdir().full_path, images, images[:40][::-1])
        config = _npz_config(path)
        config.input.pad_to_32 = pad
        config.input.num_train_examples, config.input.num_test_examples = 50, 33
        train, test = data.get_datasets(config.input)
        for split, loaded in (('train', train), ('test', test)):
            with self.subTest(split):
                streamed = row_sources.stored_split(config.input, split)
                self.assertIsInstance(streamed['image'], row_sources.StoredRows)
                _assert_view_matches(self, streamed['image'], loaded['image'])
                np.testing.assert_array_equal(streamed['label'], loaded['label'], strict=True)

    def test_without_labels_every_label_is_zero(self):
        images = _random_images('uint8', (20, 4, 4, 1))
        path = _write_npz(self.create_tempdir().full_path, images, images, labels=False)
        streamed = row_sources.stored_split(_npz_config(path).input, 'test')
        np.testing.assert_array_equal(streamed['label'], np.zeros(20, np.int32), strict=True)

    def test_slicing_reads_nothing_and_a_read_reads_only_its_rows(self):
        images = _random_images('uint8', (40, 3, 3, 1))
        path = _write_npz(self.create_tempdir().full_path, images, images)
        counting = CountingSource(row_sources.FileSource(_npz_config(path).input, split='test'))
        view = row_sources.StoredRows(counting)[2:30][:5]
        self.assertEqual((view.shape, counting.sizes), ((5, 3, 3, 1), []))
        np.testing.assert_array_equal(np.asarray(view), images[2:7])
        self.assertEqual(counting.sizes, [5])

    def test_bad_indices_say_what_is_allowed(self):
        view = row_sources.StoredRows(row_sources.ArraySource(np.zeros((4, 2)), np.zeros(4)))
        with self.assertRaisesRegex(IndexError, r'index 4 is out of bounds for 4 rows'):
            view[np.array([0, 4])]
        with self.assertRaisesRegex(IndexError, r'allowed: a slice.*integer or boolean array'):
            view[np.array([0.5])]
        with self.assertRaisesRegex(IndexError, r'boolean index of shape \(3,\) for 4 rows'):
            view[np.ones(3, bool)]

    def test_test_split_limit_and_static_binarization_name_the_key(self):
        images = _random_images('uint8', (10, 3, 3, 1))
        path = _write_npz(self.create_tempdir().full_path, images, images[:4])
        config = _npz_config(path)
        config.input.num_test_examples = 5
        with self.assertRaisesRegex(
            ValueError, r'input\.num_test_examples=5 exceeds the 4 examples of .* test split'
        ):
            row_sources.stored_split(config.input, 'test')
        config.input.num_test_examples, config.input.binarize = None, 'static'
        with self.assertRaisesRegex(ValueError, r"binarize='static'.*whole test split.*'device'"):
            row_sources.stored_split(config.input, 'test')

    def test_evaluation_streams_where_the_run_streams(self):
        images = _random_images('uint8', (60, 3, 3, 1))
        path = _write_npz(self.create_tempdir().full_path, images, images[:20])
        config = _npz_config(path, 'auto')
        for budget_gb, streamed in ((1e-7, True), (1.0, False)):  # The split is 540 bytes.
            config.input.device_budget_gb = budget_gb
            self.assertEqual(streaming.streams_from_files(config.input), streamed)
            for split in ('train', 'test'):
                got, num_train = row_sources.evaluation_split(
                    config.input, split, stream=streaming.streams_from_files(config.input)
                )
                kind = row_sources.StoredRows if streamed else np.ndarray
                self.assertIsInstance(got['image'], kind)
                self.assertEqual(
                    (len(got['image']), num_train), (60 if split == 'train' else 20, 60)
                )
        digits = test_config.get_config()
        digits.input.pipeline = 'stream'  # Built in memory: streamed from its arrays, never files.
        self.assertFalse(streaming.streams_from_files(digits.input))

    def test_splits_stored_differently_are_refused_as_when_loaded(self):
        images = _random_images('uint8', (10, 3, 3, 1))
        test = (images / 255).astype(np.float32)
        path = _write_npz(self.create_tempdir().full_path, images, test)
        config = _npz_config(path)
        message = r"'train_images' is uint8 but 'test_images' is float32; store both splits alike"
        with self.assertRaisesRegex(ValueError, message):
            data.get_datasets(config.input)
        with self.assertRaisesRegex(ValueError, message):
            row_sources.stored_split(config.input, 'test')

    def test_loaded_test_split_of_a_compressed_file(self):
        images = _random_images('uint8', (10, 3, 3, 1))
        path = os.path.join(self.create_tempdir().full_path, 'data.npz')
        np.savez_compressed(path, train_images=images, test_images=images[:6])
        config = _npz_config(path, 'device')
        config.input.num_test_examples = 4
        split, num_train = row_sources.evaluation_split(config.input, 'test')
        np.testing.assert_array_equal(split['image'], data.get_datasets(config.input)[1]['image'])
        self.assertEqual((len(split['image']), num_train), (4, 10))


class TfdsViewTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('mnist', 'mnist', False),
        ('mnist_padded', 'mnist', True),
        ('binarized', 'binarized_mnist', False),
    )
    def test_view_rows_equal_the_loaded_split(self, name, pad):
        if not (_TFDS_DIR / name).is_dir():
            self.skipTest(f'{_TFDS_DIR}/{name} is absent (set $TFDS_DATA_DIR to a prepared dir).')
        config = test_config.get_config()
        config.input.dataset, config.input.data_dir = name, str(_TFDS_DIR)
        config.input.pipeline, config.input.pad_to_32 = 'stream', pad
        config.input.num_train_examples, config.input.num_test_examples = 300, 250
        train, test = data.get_datasets(config.input)
        for split, loaded in (('train', train), ('test', test)):
            with self.subTest(split):
                streamed = row_sources.stored_split(config.input, split)
                _assert_view_matches(self, streamed['image'], loaded['image'])
                # Labels read without decoding the images (binarized_mnist has none: all 0).
                np.testing.assert_array_equal(streamed['label'], loaded['label'], strict=True)


class StreamedEvaluationTest(absltest.TestCase):
    """A run's evaluation on a streamed test split equals the loaded split's, reading batches."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
        cls.addClassCleanup(shutil.rmtree, cls.dir, ignore_errors=True)
        images = _random_images('uint8', (96, 8, 8, 1))
        cls.path = _write_npz(cls.dir, images, images[:45][::-1].copy())

    def _runs(self):
        runs = {}
        for pipeline in ('stream', 'device'):
            config = _npz_config(self.path, pipeline)
            config.input.eval_batch_size = 16  # 45 test rows: batches of 16, 16, 13.
            runs[pipeline] = trainer.Run(config)
        return runs['stream'], runs['device']

    def test_metrics_are_bit_identical_and_rows_are_read_one_batch_at_a_time(self):
        stream, device = self._runs()
        self.assertIsInstance(stream.test_data['image'], row_sources.StoredRows)
        self.assertIsInstance(device.test_data['image'], np.ndarray)
        counting = CountingSource(stream.test_data['image'].source)
        stream.test_data['image'] = row_sources.StoredRows(counting)
        state = device.create_train_state()
        got, got_per_example = stream.evaluate(state, nll_k=6)
        want, want_per_example = device.evaluate(state, nll_k=6)
        self.assertEqual(got, want)  # Same program, same inputs: the same floats.
        self.assertIsNotNone(got['nll'])
        self.assertIn('objective/loss', got)
        jax.tree.map(np.testing.assert_array_equal, got_per_example, want_per_example)
        # evaluate_dataset reads each row once in batches of eval_batch_size (16, 16, 13); the
        # objective's terms read their own batches of input.batch_size (16; 45 // 16 = 2).
        self.assertEqual(counting.sizes, [16, 16, 13, 16, 16])
        # The pictures read the reconstructions' rows only.
        counting.sizes.clear()
        images, _ = stream.eval_split()
        rows = pictures.picture_rows(images, stream.input_spec)
        self.assertEqual(counting.sizes, [pictures.NUM_RECONSTRUCTIONS])
        expected = input_transform.to_model_input(
            device.test_data['image'][: pictures.NUM_RECONSTRUCTIONS], device.input_spec
        )
        np.testing.assert_array_equal(rows, np.asarray(expected))


_TIMES = ('eval_time_sec', 'train_steps_per_sec', 'wall_time_sec', 'train_steps_per_sec_note')


@pytest.mark.slow
class StreamedRunTest(absltest.TestCase):
    def test_eval_json_and_vae_jax_evaluate_equal_the_loaded_ones(self):
        root = self.create_tempdir().full_path
        images = _random_images('uint8', (96, 8, 8, 1))
        path = _write_npz(root, images, images[:45][::-1].copy())
        results = {}
        for pipeline in ('device', 'stream'):
            workdir = os.path.join(root, pipeline)
            config = _npz_config(path, pipeline)
            config.input.eval_batch_size, config.logging.writers = 16, 'jsonl'
            trainer.train_and_evaluate(config, workdir)
            eval_json = json.loads(Path(workdir, 'eval.json').read_text())
            reads = []
            original = row_sources.FileSource.read

            def read(source, rows, reads=reads, original=original):
                if source.split == 'test':
                    reads.append(len(rows))
                return original(source, rows)

            with mock.patch.object(row_sources.FileSource, 'read', read):
                evaluated = evaluate.evaluate(
                    workdir, k_samples=6, output='k6.json', progress=False
                )
            for images in ('images', 'k6_images'):  # A picture not drawn is only a warning.
                self.assertTrue(Path(workdir, images, 'reconstructions.png').is_file())
            results[pipeline] = (eval_json, evaluated, reads)
        (device_json, device_eval, device_reads), (stream_json, stream_eval, stream_reads) = (
            results['device'],
            results['stream'],
        )
        # Same parameters (a streamed run trains on the same batches) -> the same metrics.
        for result in (device_json, stream_json, device_eval, stream_eval):
            for key in (*_TIMES, 'results_file'):
                result.pop(key, None)
        self.assertEqual(stream_json, device_json)
        self.assertEqual(stream_eval, device_eval)
        self.assertEqual(device_reads, [])  # Loaded whole, as before.
        # The streamed evaluation: one row when the source opens (its dtype), then batches of
        # --batch_size (evaluation.BATCH_SIZE = 20: 20, 20, 5), of input.batch_size (16, 16),
        # and the pictures' reconstructions (16).
        self.assertEqual(stream_reads, [1, 20, 20, 5, 16, 16, pictures.NUM_RECONSTRUCTIONS])


if __name__ == '__main__':
    absltest.main()
