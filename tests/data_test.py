"""Tests for vae_jax/data.py and vae_jax/data_sources.py.

Real TFDS data are read from $TFDS_DATA_DIR, else ../shared/data/tfds (skipped where absent), and
checked against the original files beside that folder (../shared/data/<name>) where present.
Reading a full train split takes 5-15 s on 2 cores, so by default only the test splits are read
in full; train counts come from the data source's length and train contents from the first
records. VAE_JAX_FULL_DATA_TESTS=1 also reads the full train splits. Nothing here uses the
network: TFDS sets other than the prepared ones run under `tfds.testing.mock_data`.
"""

import copy
import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from unittest import mock

import ml_collections
import numpy as np
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import (
    config_validation,
    data,
    data_sources,
    distributions,
    input_transform,
    stored_images,
    trainer,
)

_REPO = Path(__file__).resolve().parents[1]
_TFDS_DIR = Path(
    os.environ.get('TFDS_DATA_DIR') or Path(__file__).resolve().parents[2] / 'shared/data/tfds'
)
_SHARED_DATA = _TFDS_DIR.parent  # The original files lie beside the prepared copies.
_FULL = os.environ.get('VAE_JAX_FULL_DATA_TESTS') == '1'

# Reference facts (published split sizes; test-split means computed from the original files).
_SIZES = {
    'mnist': (60_000, 10_000),
    'fashion_mnist': (60_000, 10_000),
    'binarized_mnist': (50_000, 10_000),
}
_TRAIN_MEAN = {'mnist': 33.32 / 255, 'fashion_mnist': 72.94 / 255, 'binarized_mnist': 0.1306}
_TEST_MEAN = {'mnist': 33.7912 / 255, 'fashion_mnist': 73.1466 / 255, 'binarized_mnist': 0.13251}
_TEST_CLASS_COUNTS = {
    'mnist': [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    'fashion_mnist': [1000] * 10,
    'binarized_mnist': [10_000],
}
_TRAIN_CLASS_COUNTS = {
    'mnist': [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    'fashion_mnist': [6000] * 10,
    'binarized_mnist': [50_000],
}
# TFDS shuffles records once when it prepares a data set, so its first train labels differ from
# the original files' (mnist: 5 0 4 1 9 2 1 3 1 4; fashion_mnist: 9 0 0 3 0 2 7 2 5 5).
_TFDS_FIRST_TRAIN_LABELS = {
    'mnist': [4, 1, 0, 7, 8, 1, 2, 7, 1, 6],
    'fashion_mnist': [2, 1, 8, 4, 1, 9, 2, 2, 0, 2],
    'binarized_mnist': [0] * 10,
}
_TFDS_NAMES = [(name, name) for name in data.TFDS_DATASETS]


def _input_config(**overrides):
    """`config.input` of configs/default.py with overrides (keeps the tests in step with it)."""
    spec = importlib.util.spec_from_file_location('default_config', _REPO / 'configs/default.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config().input
    for key, value in overrides.items():
        config[key] = value
    return config


def _tfds_config(name, **overrides):
    # num_train_examples=100 keeps the train read short; the same key shares the cache.
    overrides = {
        'dataset': name,
        'data_dir': str(_TFDS_DIR),
        'num_train_examples': 100,
        **overrides,
    }
    return _input_config(**overrides)


def _model_input(images, input_config):
    """The float32 images the model sees (`input_transform.to_model_input` of the stored ones)."""
    spec = input_transform.spec_from(input_config, images)
    return np.asarray(input_transform.to_model_input(images, spec))


def _tempdir(test):
    # absltest's create_tempdir needs parsed absl flags, which pytest does not provide.
    return test.enter_context(tempfile.TemporaryDirectory())


def _read_original(name, split):
    """(uint8 [N, 784], uint8 [N]) from the original files, or None where they are absent."""
    folder = _SHARED_DATA / name
    if name == 'binarized_mnist':
        path = folder / f'binarized_mnist_{split}.amat.gz'
        if not path.exists():
            return None
        image = np.frombuffer(gzip.open(path).read(), np.uint8).reshape(-1, 1568)[:, ::2] - 48
        return image, np.zeros(len(image), np.uint8)
    prefix = {'train': 'train', 'test': 't10k'}[split]
    image_path = folder / f'{prefix}-images-idx3-ubyte.gz'
    label_path = folder / f'{prefix}-labels-idx1-ubyte.gz'
    if not (image_path.exists() and label_path.exists()):
        return None
    image = np.frombuffer(gzip.open(image_path).read(), np.uint8, offset=16).reshape(-1, 784)
    label = np.frombuffer(gzip.open(label_path).read(), np.uint8, offset=8)
    return image, label


def _rows(image, label):
    """Each example as one opaque row (pixels then label), for order-free comparisons."""
    table = np.ascontiguousarray(np.concatenate([image, label[:, None]], axis=1).astype(np.uint8))
    return table.view(np.dtype((np.void, table.shape[1])))[:, 0]


def _to_uint8(image):
    """Stored images (uint8, or bool 0/1) as uint8 rows [N, H * W * C]."""
    return image.reshape(len(image), -1).astype(np.uint8)


class TfdsRealDataTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        if not _TFDS_DIR.is_dir():
            self.skipTest(
                f'{_TFDS_DIR} is absent (set $TFDS_DATA_DIR to a prepared TFDS data dir).'
            )

    @parameterized.named_parameters(*_TFDS_NAMES)
    def test_test_split_counts_range_mean_labels(self, name):
        train, test = data.get_datasets(_tfds_config(name))
        self.assertEqual(test['image'].shape, (_SIZES[name][1], 28, 28, 1))
        stored = np.bool_ if name == 'binarized_mnist' else np.uint8  # one byte a pixel
        self.assertEqual(test['image'].dtype, stored)
        self.assertEqual(test['image'].nbytes, _SIZES[name][1] * 784)
        self.assertEqual(test['label'].dtype, np.int32)
        x = _model_input(test['image'], _tfds_config(name))
        self.assertEqual(x.dtype, np.float32)
        self.assertEqual(x.min(), 0.0)
        self.assertEqual(x.max(), 1.0)
        self.assertAlmostEqual(x.mean(dtype=np.float64), _TEST_MEAN[name], delta=1e-5)
        np.testing.assert_array_equal(np.bincount(test['label']), _TEST_CLASS_COUNTS[name])
        self.assertEqual(train['image'].shape, (100, 28, 28, 1))
        np.testing.assert_array_equal(train['label'][:10], _TFDS_FIRST_TRAIN_LABELS[name])
        if name == 'binarized_mnist':
            self.assertTrue(np.isin(x, [0.0, 1.0]).all())

    @parameterized.named_parameters(*_TFDS_NAMES)
    def test_train_split_length_from_data_source(self, name):
        import tensorflow_datasets as tfds

        source = tfds.data_source(name, split='train', data_dir=str(_TFDS_DIR), download=False)
        self.assertLen(source, _SIZES[name][0])

    @parameterized.named_parameters(*_TFDS_NAMES)
    def test_matches_original_files(self, name):
        original_test, original_train = _read_original(name, 'test'), _read_original(name, 'train')
        if original_test is None or original_train is None:
            self.skipTest(f'original files of {name} are absent under {_SHARED_DATA / name}')
        train, test = data.get_datasets(_tfds_config(name))
        # The test split holds exactly the original examples (with their labels), in TFDS order.
        np.testing.assert_array_equal(
            np.sort(_rows(_to_uint8(test['image']), test['label'])),
            np.sort(_rows(*original_test)),
        )
        # Each of the first train examples is an original train example with the same label.
        self.assertTrue(
            np.isin(_rows(_to_uint8(train['image']), train['label']), _rows(*original_train)).all()
        )

    @parameterized.named_parameters(*_TFDS_NAMES)
    def test_full_train_split(self, name):
        if not _FULL:
            self.skipTest('reads a whole train split (5-15 s); set VAE_JAX_FULL_DATA_TESTS=1')
        train, _ = data.get_datasets(_tfds_config(name, num_train_examples=None))
        self.assertEqual(train['image'].shape, (_SIZES[name][0], 28, 28, 1))
        x = _model_input(train['image'], _tfds_config(name))
        self.assertAlmostEqual(x.mean(dtype=np.float64), _TRAIN_MEAN[name], delta=5e-5)
        np.testing.assert_array_equal(np.bincount(train['label']), _TRAIN_CLASS_COUNTS[name])

    def test_pad_and_static_binarize_on_mnist(self):
        config = _tfds_config('mnist', binarize='static', pad_to_32=True)
        _, grey = data.get_datasets(_tfds_config('mnist'))
        _, binary = data.get_datasets(config)
        self.assertEqual(binary['image'].dtype, np.bool_)  # stored unpadded; padded in the step
        self.assertEqual(binary['image'].shape, (10_000, 28, 28, 1))
        x = _model_input(binary['image'], config)
        self.assertEqual(x.shape, (10_000, 32, 32, 1))
        self.assertTrue(np.isin(x, [0.0, 1.0]).all())
        np.testing.assert_array_equal(x[:, :2], 0.0)
        np.testing.assert_array_equal(x[:, :, -2:], 0.0)
        # Bernoulli(pixel): the mean matches the grey mean (7.8M draws: std of the mean < 2e-4).
        centre = x[:, 2:30, 2:30]
        grey_mean = _model_input(grey['image'], _tfds_config('mnist')).mean()
        self.assertAlmostEqual(centre.mean(), grey_mean, delta=1e-3)

    def test_static_binarize_is_a_no_op_on_binarized_mnist(self):
        _, none = data.get_datasets(_tfds_config('binarized_mnist'))
        _, static = data.get_datasets(_tfds_config('binarized_mnist', binarize='static'))
        np.testing.assert_array_equal(static['image'], none['image'])


def _fixed_mock_getitems(record_keys, generator, serialized=False):
    """tfds 4.9.10's mock of `ArrayRecordDataSource.__getitems__` is set as a plain MagicMock
    attribute, so it is called without `self` and fails; this stand-in takes no `self`."""
    assert not serialized
    return [generator[key] for key in record_keys]


class TfdsMockDataTest(parameterized.TestCase):
    """The TFDS code path under `tfds.testing.mock_data` (random records, no files)."""

    def setUp(self):
        super().setUp()
        import tensorflow_datasets as tfds

        self.tfds = tfds
        self.data_dir = _tempdir(self)
        self.addCleanup(data_sources.read_tfds_split.cache_clear)

    def _mock(self, num_examples):
        self.enter_context(
            mock.patch('tensorflow_datasets.testing.mocking._getitems', _fixed_mock_getitems)
        )
        # mock_data (policy USE_CODE) points every builder at a folder that does not exist, so
        # the "is it prepared" check would fail; that check is tested with a real empty folder.
        self.enter_context(
            mock.patch.object(self.tfds.core.DatasetBuilder, 'is_prepared', return_value=True)
        )
        self.enter_context(self.tfds.testing.mock_data(num_examples=num_examples))

    @parameterized.named_parameters(('mnist', 'mnist'), ('fashion_mnist', 'fashion_mnist'))
    def test_reads_and_scales_mock_records(self, name):
        self._mock(num_examples=23)
        train, test = data.get_datasets(
            _input_config(dataset=name, data_dir=self.data_dir, num_train_examples=7)
        )
        source = self.tfds.data_source(name, split='test', data_dir=self.data_dir, download=False)
        expected = np.stack([source[i]['image'] for i in range(23)]).astype(np.float64) / 255
        self.assertEqual(test['image'].dtype, np.uint8)
        x = _model_input(test['image'], _input_config(dataset=name))
        np.testing.assert_allclose(x, expected, rtol=1e-6)
        np.testing.assert_array_equal(test['label'], [int(source[i]['label']) for i in range(23)])
        self.assertEqual(x.dtype, np.float32)
        self.assertEqual(test['label'].dtype, np.int32)
        self.assertEqual(train['image'].shape, (7, 28, 28, 1))

    def test_binarized_mnist_with_grey_values_is_rejected(self):
        self._mock(num_examples=5)  # Mock pixels are random 0..255, not the 0/1 of the real set.
        with self.assertRaisesRegex(ValueError, r'binarized_mnist .* expected at most 1'):
            data.get_datasets(_input_config(dataset='binarized_mnist', data_dir=self.data_dir))


class TfdsErrorTest(parameterized.TestCase):
    @parameterized.named_parameters(*_TFDS_NAMES)
    def test_unprepared_data_dir_says_where_and_how(self, name):
        empty = _tempdir(self)
        with self.assertRaises(FileNotFoundError) as raised:
            data.get_datasets(_input_config(dataset=name, data_dir=empty))
        message = str(raised.exception)
        self.assertIn(empty, message)
        self.assertIn(f'tfds build {name}', message)
        self.assertIn('--file_format array_record', message)
        self.assertIn('copy a prepared data dir', message)

    def test_data_dir_from_environment(self):
        empty = _tempdir(self)
        with mock.patch.dict(os.environ, {'TFDS_DATA_DIR': empty}):
            with self.assertRaisesRegex(FileNotFoundError, empty):
                data.get_datasets(_input_config(dataset='mnist'))

    def test_no_data_dir_at_all_reads_the_tfds_default(self):
        home = _tempdir(self)
        with mock.patch.dict(os.environ, {'HOME': home}, clear=True):
            with self.assertRaises(FileNotFoundError) as raised:
                data.get_datasets(_input_config(dataset='mnist'))
        self.assertIn(os.path.join(home, 'tensorflow_datasets'), str(raised.exception))
        self.assertIn('input.data_dir, else $TFDS_DATA_DIR, else', str(raised.exception))

    def test_data_dir_order_flag_then_environment_then_default(self):
        with mock.patch.dict(os.environ, {'HOME': '/home/x', 'TFDS_DATA_DIR': '/env/tfds'}):
            self.assertEqual(data.resolve_data_dir('/flag/tfds'), '/flag/tfds')
            self.assertEqual(data.resolve_data_dir(None), '/env/tfds')
            self.assertEqual(data.resolve_data_dir('gs://bucket/tfds'), 'gs://bucket/tfds')
            self.assertEqual(data.resolve_data_dir('rel/dir'), os.path.join(os.getcwd(), 'rel/dir'))
        with mock.patch.dict(os.environ, {'HOME': '/home/x'}, clear=True):
            self.assertEqual(data.resolve_data_dir(None), '/home/x/tensorflow_datasets')


class DigitsTest(parameterized.TestCase):
    def test_split_sizes_range_and_stratification(self):
        from sklearn import datasets

        train, test = data.get_datasets(_input_config())
        self.assertEqual(train['image'].shape, (1437, 8, 8, 1))
        self.assertEqual(test['image'].shape, (360, 8, 8, 1))
        self.assertEqual(train['image'].dtype, np.uint8)  # stored 0..16
        self.assertEqual(train['label'].dtype, np.int32)
        x = _model_input(train['image'], _input_config())
        self.assertEqual(x.min(), 0.0)
        self.assertEqual(x.max(), 1.0)
        # Train + test are exactly the 1797 digits, values 0..16 scaled by 1/16.
        digits = datasets.load_digits()
        both = np.concatenate([x, _model_input(test['image'], _input_config())])
        both = both.reshape(1797, 64) * 16
        both_labels = np.concatenate([train['label'], test['label']])
        np.testing.assert_array_equal(both, np.rint(both))
        np.testing.assert_array_equal(
            np.sort(_rows(both.astype(np.uint8), both_labels)),
            np.sort(_rows(digits.data.astype(np.uint8), digits.target)),
        )
        # Stratified: each class puts 20% (+-1) of its images into the test split.
        per_class = np.bincount(digits.target)
        self.assertLessEqual(np.abs(np.bincount(test['label']) - 0.2 * per_class).max(), 1.0)

    def test_deterministic_and_fresh_arrays(self):
        first, _ = data.get_datasets(_input_config())
        first['image'][:] = 99  # Returned arrays are copies: the cache is unaffected.
        second, _ = data.get_datasets(_input_config())
        third, _ = data.get_datasets(_input_config())
        self.assertLessEqual(second['image'].max(), 16)
        np.testing.assert_array_equal(second['image'], third['image'])

    def test_pad_to_32_centres_the_image(self):
        _, plain = data.get_datasets(_input_config())
        _, padded = data.get_datasets(_input_config(pad_to_32=True))
        np.testing.assert_array_equal(padded['image'], plain['image'])  # padded in the step
        plain = _model_input(plain['image'], _input_config())
        padded = _model_input(padded['image'], _input_config(pad_to_32=True))
        self.assertEqual(padded.shape, (360, 32, 32, 1))
        np.testing.assert_array_equal(padded[:, 12:20, 12:20], plain)
        self.assertEqual(np.abs(padded).sum(), np.abs(plain).sum())
        self.assertEqual(data.data_shape(_input_config(pad_to_32=True)), (32, 32, 1))

    def test_static_binarize(self):
        grey, _ = data.get_datasets(_input_config())
        grey = {'image': _model_input(grey['image'], _input_config())}
        binary, _ = data.get_datasets(_input_config(binarize='static'))
        again, _ = data.get_datasets(_input_config(binarize='static'))
        self.assertEqual(binary['image'].dtype, np.bool_)
        self.assertTrue(np.isin(binary['image'], [0.0, 1.0]).all())
        np.testing.assert_array_equal(binary['image'], again['image'])
        np.testing.assert_array_equal(binary['image'][grey['image'] == 0], 0.0)
        np.testing.assert_array_equal(binary['image'][grey['image'] == 1], 1.0)
        # 92k Bernoulli draws: the std of the mean is under 0.0017.
        self.assertAlmostEqual(binary['image'].mean(), grey['image'].mean(), delta=0.008)
        # Bernoulli(p) per pixel: among pixels of grey level p, the fraction of ones is ~p.
        level = grey['image'] == 0.5
        self.assertAlmostEqual(binary['image'][level].mean(), 0.5, delta=0.05)

    def test_dynamic_binarize_leaves_grey_values(self):
        grey, _ = data.get_datasets(_input_config())
        dynamic, _ = data.get_datasets(_input_config(binarize='dynamic'))
        np.testing.assert_array_equal(dynamic['image'], grey['image'])

    def test_truncation(self):
        _, full = data.get_datasets(_input_config())
        train, test = data.get_datasets(_input_config(num_train_examples=10, num_test_examples=50))
        self.assertLen(train['image'], 10)
        np.testing.assert_array_equal(test['image'], full['image'][:50])
        np.testing.assert_array_equal(test['label'], full['label'][:50])


class PadTest(parameterized.TestCase):
    @parameterized.named_parameters(('28', 28, 2, 2), ('8', 8, 12, 12), ('odd_31', 31, 0, 1))
    def test_pad_to_32(self, size, before, after):
        image = np.random.default_rng(0).random((3, size, size, 2)).astype(np.float32)
        padded = data.pad_to_32(image)
        self.assertEqual(padded.shape, (3, 32, 32, 2))
        inside = np.zeros((32, 32), bool)
        inside[before : 32 - after, before : 32 - after] = True
        np.testing.assert_array_equal(padded[:, inside].reshape(image.shape), image)
        np.testing.assert_array_equal(padded[:, ~inside], 0.0)

    def test_larger_than_32_is_an_error(self):
        with self.assertRaisesRegex(ValueError, '33x33'):
            data.pad_to_32(np.zeros((1, 33, 33, 1)))


def _toy(name, split=0, **overrides):
    return data.get_datasets(_input_config(dataset=name, **overrides))[split]


class ToyTest(parameterized.TestCase):
    @parameterized.named_parameters(('noise_0p2', 0.2), ('noise_0p5', 0.5))
    def test_eight_gaussians_statistics(self, noise):
        points, label = _toy('eight_gaussians', toy_noise=noise).values()
        n = 20_000
        self.assertEqual(points.shape, (n, 2))
        self.assertEqual(points.dtype, np.float32)
        counts = np.bincount(label, minlength=8)
        self.assertLen(counts, 8)
        self.assertLess(np.abs(counts - n / 8).max(), 5 * np.sqrt(n / 8 * 7 / 8))
        angles = 2 * np.pi * np.arange(8) / 8
        centres = 5 * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
        residual = points - centres[label]
        np.testing.assert_allclose(residual.mean(0), 0.0, atol=5 * noise / np.sqrt(n))
        np.testing.assert_allclose(residual.std(0), noise, rtol=0.03)
        for k in range(8):
            np.testing.assert_allclose(points[label == k].mean(0), centres[k], atol=0.05)

    @parameterized.named_parameters(*[(name, name) for name in data.TOY_DATASETS])
    def test_splits_shapes_and_different_seeds(self, name):
        train, test = data.get_datasets(_input_config(dataset=name, toy_num_examples=500))
        for split in (train, test):
            self.assertEqual(split['image'].shape, (500, 2))
            self.assertEqual(split['image'].dtype, np.float32)
            self.assertEqual(split['label'].dtype, np.int32)
            self.assertTrue(np.isfinite(split['image']).all())
            self.assertLess(split['label'].max(), data.dataset_info(name)['num_classes'])
        self.assertFalse(np.array_equal(train['image'], test['image']))
        again, _ = data.get_datasets(_input_config(dataset=name, toy_num_examples=500))
        np.testing.assert_array_equal(again['image'], train['image'])
        self.assertEqual(data.data_shape(_input_config(dataset=name)), (2,))

    def test_pinwheel_radius_and_arms(self):
        points, label = _toy('pinwheel').values()
        np.testing.assert_array_equal(np.bincount(label), [4000] * 5)
        # Rotation keeps the norm: |x| / 2 = |f| with f ~ N((1, 0), diag(0.3^2, 0.1^2)).
        f = np.random.default_rng(123).standard_normal((200_000, 2)) * [0.3, 0.1] + [1.0, 0.0]
        radius = np.linalg.norm(points, axis=-1) / 2
        reference = np.linalg.norm(f, axis=-1)
        self.assertAlmostEqual(radius.mean(), reference.mean(), delta=0.01)
        self.assertAlmostEqual(radius.std(), reference.std(), delta=0.01)

    def test_two_moons_labels(self):
        points, label = _toy('two_moons').values()
        np.testing.assert_array_equal(np.bincount(label), [10_000, 10_000])
        # The outer moon (label 0) is the upper one.
        self.assertGreater(points[label == 0, 1].mean(), points[label == 1, 1].mean())

    def test_toy_truncation(self):
        train, test = data.get_datasets(
            _input_config(dataset='checkerboard', toy_num_examples=300, num_train_examples=100)
        )
        self.assertLen(train['image'], 100)
        self.assertLen(test['image'], 300)


def _grid(low, high, step):
    axis = np.arange(low + step / 2, high, step)
    xx, yy = np.meshgrid(axis, axis, indexing='ij')
    return np.stack([xx.ravel(), yy.ravel()], axis=-1), axis


class TrueLogDensityTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('eight_gaussians', 'eight_gaussians', 0.2),
        ('eight_gaussians_wide', 'eight_gaussians', 0.6),
        ('two_moons', 'two_moons', 0.2),
        ('two_moons_narrow', 'two_moons', 0.1),
        ('checkerboard', 'checkerboard', 0.2),
        ('pinwheel', 'pinwheel', 0.2),
    )
    def test_integrates_to_one(self, name, noise):
        points, _ = _grid(-8.0, 8.0, 0.05) if name == 'eight_gaussians' else _grid(-5.0, 5.0, 0.05)
        log_density = data.true_log_density(name, points, noise)
        self.assertEqual(log_density.shape, (len(points),))
        self.assertAlmostEqual(np.exp(log_density).sum() * 0.05**2, 1.0, delta=2e-3)

    def test_eight_gaussians_matches_scipy(self):
        from scipy import stats

        points = np.random.default_rng(0).normal(size=(50, 2)) * 4
        angles = 2 * np.pi * np.arange(8) / 8
        expected = np.log(
            sum(
                stats.multivariate_normal(5 * np.array([np.cos(a), np.sin(a)]), 0.3**2).pdf(points)
                for a in angles
            )
            / 8
        )
        np.testing.assert_allclose(
            data.true_log_density('eight_gaussians', points, 0.3), expected, rtol=1e-10
        )

    @parameterized.named_parameters(
        ('eight_gaussians', 'eight_gaussians'),
        ('two_moons', 'two_moons'),
        ('checkerboard', 'checkerboard'),
        ('pinwheel', 'pinwheel'),
    )
    def test_matches_the_sampler(self, name):
        """Histogram of 200k samples vs the density integrated over the same 0.5x0.5 bins."""
        n, bin_size, sub = 200_000, 0.5, 0.05
        samples = data.make_toy(name, n, 0.2, seed=7)['image']
        points, _ = _grid(-7.0, 7.0, sub)
        density = np.exp(data.true_log_density(name, points, 0.2)) * sub**2
        edges = np.arange(-7.0, 7.0 + bin_size / 2, bin_size)
        expected, _, _ = np.histogram2d(points[:, 0], points[:, 1], [edges, edges], weights=density)
        observed, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], [edges, edges])
        self.assertAlmostEqual(observed.sum() / n, 1.0, delta=1e-3)  # Nothing outside the grid.
        # Binomial std of a bin frequency is at most 0.5/sqrt(n) ~ 1.1e-3; allow ~3.5 sigma.
        np.testing.assert_allclose(observed / n, expected, atol=4e-3)

    def test_pinwheel_matches_a_kernel_density_estimate(self):
        """Pointwise, at data-like points: a Gaussian KDE of 200k samples vs the exact density.

        Bandwidth h = 0.03: the KDE's relative bias ~ h^2 / (2 sigma^2) is ~1% for the arms'
        narrowest std (sigma = 2 * 0.1), its relative std ~ 1 / sqrt(n p 4 pi h^2) is < 10% where
        p > 0.05.
        """
        from scipy import special

        samples = data.make_toy('pinwheel', 200_000, 0.2, seed=3)['image'].astype(np.float64)
        points = data.make_toy('pinwheel', 40, 0.2, seed=4)['image'].astype(np.float64)
        bandwidth = 0.03
        sq = ((points[:, None, :] - samples[None, :, :]) ** 2).sum(-1)
        kde = special.logsumexp(-sq / (2 * bandwidth**2), axis=1) - np.log(
            len(samples) * 2 * np.pi * bandwidth**2
        )
        exact = data.true_log_density('pinwheel', points, 0.2)
        dense = np.exp(exact) > 0.05
        self.assertGreater(dense.sum(), 20)
        np.testing.assert_allclose(kde[dense], exact[dense], atol=0.25)  # Now 0.13 at most.

    def test_pinwheel_density_is_finite_everywhere_near_the_data(self):
        points = np.random.default_rng(0).normal(size=(2000, 2)) * 3
        log_density = data.true_log_density('pinwheel', points, 0.0)
        self.assertTrue(np.all(np.isfinite(log_density)))
        self.assertLess(log_density.max(), np.log(0.3))  # The densest points have ~0.26.

    @parameterized.named_parameters(
        ('unknown', 'digits', np.zeros((3, 2)), 0.2, 'not a toy set'),
        ('shape', 'eight_gaussians', np.zeros((3, 3)), 0.2, r'\[M, 2\]'),
        ('noise', 'two_moons', np.zeros((3, 2)), 0.0, 'noise must be > 0'),
    )
    def test_errors(self, name, points, noise, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            data.true_log_density(name, points, noise)


class ConfigErrorTest(parameterized.TestCase):
    @parameterized.named_parameters(
        (
            'unknown_dataset',
            dict(dataset='cifar10'),
            r"input\.dataset='cifar10'.*mnist.*digits.*npz.*'tfds:<name>'",
        ),
        ('empty_tfds_name', dict(dataset='tfds:'), r"input\.dataset='tfds:' is not supported"),
        ('npz_without_path', dict(dataset='npz'), r"input\.path=None: input\.dataset='npz'"),
        ('path_without_npz', dict(path='x.npz'), r"input\.path='x\.npz' applies only to"),
        ('download_digits', dict(download=True), r'input\.download=True applies to TFDS'),
        (
            'recorded_on_fixed_set',
            dict(data_shape=(8, 8, 1)),
            r"input\.data_shape=\(8, 8, 1\).*'digits' has fixed facts",
        ),
        ('unknown_binarize', dict(binarize='always'), r"input\.binarize='always'.*static"),
        ('binarize_toy', dict(dataset='two_moons', binarize='static'), r'input\.binarize'),
        ('dynamic_toy', dict(dataset='pinwheel', binarize='dynamic'), r'input\.binarize'),
        ('pad_toy', dict(dataset='eight_gaussians', pad_to_32=True), r'input\.pad_to_32'),
        ('zero_train', dict(num_train_examples=0), r'input\.num_train_examples'),
        ('too_many_test', dict(num_test_examples=361), r'input\.num_test_examples=361 exceeds'),
        ('toy_count', dict(dataset='two_moons', toy_num_examples=0), r'input\.toy_num_examples'),
        ('toy_noise', dict(dataset='two_moons', toy_noise=-0.1), r'input\.toy_noise'),
    )
    def test_bad_values(self, overrides, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            data.get_datasets(_input_config(**overrides))

    def test_dataset_info(self):
        self.assertEqual(
            data.dataset_info('mnist'), dict(num_classes=10, is_image=True, has_labels=True)
        )
        self.assertEqual(
            data.dataset_info('binarized_mnist'),
            dict(num_classes=1, is_image=True, has_labels=False),
        )
        self.assertFalse(data.dataset_info('eight_gaussians')['is_image'])
        with self.assertRaisesRegex(ValueError, r"input\.dataset='nope'"):
            data.dataset_info('nope')
        with self.assertRaisesRegex(ValueError, 'pass the whole input config'):
            data.dataset_info('npz')

    @parameterized.named_parameters(
        ('mnist', 'mnist', False, (28, 28, 1)),
        ('mnist_padded', 'mnist', True, (32, 32, 1)),
        ('digits', 'digits', False, (8, 8, 1)),
    )
    def test_data_shape(self, name, pad, expected):
        self.assertEqual(data.data_shape(_input_config(dataset=name, pad_to_32=pad)), expected)


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _npz_arrays(num_train=40, num_test=12, shape=(6, 5), seed=0):
    """uint8 images [N, H, W] (no channel axis) and labels 0..3."""
    rng = np.random.default_rng(seed)
    return dict(
        train_images=rng.integers(0, 256, (num_train, *shape), dtype=np.uint8),
        test_images=rng.integers(0, 256, (num_test, *shape), dtype=np.uint8),
        train_labels=rng.integers(0, 4, num_train),
        test_labels=rng.integers(0, 4, num_test),
    )


class NpzTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.dir = Path(_tempdir(self))

    def test_uint8_bool_and_float_images(self):
        arrays = _npz_arrays()
        path = _write_npz(self.dir / 'u8.npz', **arrays)
        train, test = data.get_datasets(_input_config(dataset='npz', path=path))
        self.assertEqual(train['image'].shape, (40, 6, 5, 1))
        self.assertEqual(train['image'].dtype, np.uint8)
        # uint8 v -> v / 255 in the step, exactly as float32 division gives it.
        np.testing.assert_array_equal(
            _model_input(test['image'], _input_config(dataset='npz', path=path))[..., 0],
            arrays['test_images'].astype(np.float32) / np.float32(255),
        )
        np.testing.assert_array_equal(train['label'], arrays['train_labels'])
        self.assertEqual(train['label'].dtype, np.int32)
        self.assertEqual(data.data_shape(_input_config(dataset='npz', path=path)), (6, 5, 1))
        info = data.dataset_info(_input_config(dataset='npz', path=path))
        self.assertEqual(info, dict(num_classes=4, is_image=True, has_labels=True))

        rng = np.random.default_rng(1)
        floats = rng.random((7, 4, 4, 3)).astype(np.float64)
        path = _write_npz(self.dir / 'f.npz', train_images=floats, test_images=floats[:2] > 0.5)
        with self.assertRaisesRegex(ValueError, r"'train_images' is float64 but 'test_images'"):
            data.get_datasets(_input_config(dataset='npz', path=path))
        path = _write_npz(self.dir / 'f.npz', train_images=floats, test_images=floats[:2])
        train, test = data.get_datasets(_input_config(dataset='npz', path=path))
        self.assertEqual(train['image'].dtype, np.float32)  # already in [0, 1]: kept as float32
        np.testing.assert_array_equal(train['image'], floats.astype(np.float32))
        np.testing.assert_array_equal(train['label'], 0)  # No labels in the file.
        info = data.dataset_info(_input_config(dataset='npz', path=path))
        self.assertEqual(info, dict(num_classes=1, is_image=True, has_labels=False))

        binary = rng.random((5, 3, 3)) > 0.5
        path = _write_npz(self.dir / 'b.npz', train_images=binary, test_images=binary)
        train, _ = data.get_datasets(
            _input_config(dataset='npz', path=path), likelihood='bernoulli'
        )
        self.assertEqual(train['image'].dtype, np.bool_)
        np.testing.assert_array_equal(train['image'][..., 0], binary)

    def test_truncate_binarize_and_pad(self):
        path = _write_npz(self.dir / 'd.npz', **_npz_arrays())
        config = _input_config(
            dataset='npz', path=path, num_train_examples=10, binarize='static', pad_to_32=True
        )
        train, test = data.get_datasets(config)
        self.assertEqual(train['image'].shape, (10, 6, 5, 1))  # as stored: padded in the step
        self.assertEqual(train['image'].dtype, np.bool_)
        self.assertEqual(_model_input(train['image'], config).shape, (10, 32, 32, 1))
        self.assertEqual(_model_input(test['image'], config).shape, (12, 32, 32, 1))
        self.assertEqual(data.data_shape(config), (32, 32, 1))

    def test_relative_path_counts_from_the_current_directory(self):
        _write_npz(self.dir / 'mine.npz', **_npz_arrays())
        config = _input_config(dataset='npz', path='mine.npz')
        old = os.getcwd()
        os.chdir(self.dir)
        self.addCleanup(os.chdir, old)
        train, _ = data.get_datasets(config)
        self.assertLen(train['image'], 40)
        os.chdir(old)
        with self.assertRaisesRegex(
            FileNotFoundError,
            rf"input\.path='mine\.npz': no such file \(relative to the current directory "
            rf"'{os.getcwd()}': '{os.getcwd()}/mine\.npz'\)",
        ):
            data.get_datasets(config)

    def _bad(self, name, **arrays):
        return _write_npz(self.dir / f'{name}.npz', **arrays)

    @parameterized.named_parameters(
        (
            'wrong_key',
            lambda a: dict(x_train=a['train_images'], test_images=a['test_images']),
            r"bad\.npz: holds arrays \['test_images', 'x_train'\]; missing \['train_images'\]; "
            r"unexpected \['x_train'\]",
        ),
        (
            'misspelt_label_key',
            lambda a: dict(a, train_label=a['train_labels']),
            r"bad\.npz: .*unexpected \['train_label'\]",
        ),
        (
            'label_count',
            lambda a: dict(a, train_labels=a['train_labels'][:39]),
            r"bad\.npz: 'train_labels' has 39 entries but 'train_images' has 40\.",
        ),
        (
            'one_split_labelled',
            lambda a: {k: v for k, v in a.items() if k != 'test_labels'},
            r"bad\.npz: has 'train_labels' but not 'test_labels'",
        ),
        (
            'float_outside_unit_interval',
            lambda a: dict(a, test_images=a['test_images'].astype(np.float32)),
            r"bad\.npz: 'test_images' is float32 with values in \[0, 255\] \(e\.g\. \d+ at index",
        ),
        (
            'nan',
            lambda a: dict(a, train_images=np.full((40, 6, 5), np.nan)),
            r"bad\.npz: 'train_images' holds 1200 non-finite values",
        ),
        (
            'int64_images',
            lambda a: dict(a, train_images=a['train_images'].astype(np.int64)),
            r"bad\.npz: 'train_images' has dtype int64; allowed: uint8",
        ),
        (
            'image_rank',
            lambda a: dict(a, train_images=a['train_images'].reshape(40, 30)),
            r"bad\.npz: 'train_images' has shape \(40, 30\); allowed: \[N, H, W, C\]",
        ),
        (
            'image_shapes_differ',
            lambda a: dict(a, test_images=a['test_images'][:, :5]),
            r"bad\.npz: 'train_images' holds images of shape \(6, 5, 1\) but 'test_images' of "
            r'shape \(5, 5, 1\)',
        ),
        (
            'float_labels',
            lambda a: dict(a, test_labels=a['test_labels'].astype(float)),
            r"bad\.npz: 'test_labels' has dtype float64; allowed: an integer dtype",
        ),
        (
            'negative_label',
            lambda a: dict(a, test_labels=a['test_labels'] - 5),
            r"bad\.npz: 'test_labels' holds -\d at index \d+; class ids must be >= 0",
        ),
    )
    def test_bad_file_names_the_file_and_key(self, make, pattern):
        path = self._bad('bad', **make(_npz_arrays()))
        with self.assertRaisesRegex(ValueError, pattern):
            data.get_datasets(_input_config(dataset='npz', path=path))

    @parameterized.named_parameters(
        ('bernoulli', 'bernoulli', r"bad\.npz: 'train_images': model\.likelihood='bernoulli'"),
    )
    def test_values_outside_the_likelihood_support(self, likelihood, pattern):
        path = self._bad('bad', **_npz_arrays())
        config = _input_config(dataset='npz', path=path)
        with self.assertRaisesRegex(ValueError, pattern):
            data.get_datasets(config, likelihood=likelihood)
        # Binarised data are in {0, 1}: the same file is then fine for a Bernoulli likelihood.
        config.binarize = 'static'
        data.get_datasets(config, likelihood=likelihood)
        # 0/255 images scale to {0, 1}: fine without binarising.
        arrays = _npz_arrays()
        for key in ('train_images', 'test_images'):
            arrays[key] = np.where(arrays[key] > 127, 255, 0).astype(np.uint8)
        path = self._bad('binary', **arrays)
        data.get_datasets(_input_config(dataset='npz', path=path), likelihood=likelihood)

    def test_missing_file_and_not_an_npz(self):
        missing = str(self.dir / 'nothing.npz')
        with self.assertRaisesRegex(FileNotFoundError, rf"input\.path='{missing}': no such file"):
            data.get_datasets(_input_config(dataset='npz', path=missing))
        text = self.dir / 'text.npz'
        text.write_text('not a zip')
        with self.assertRaisesRegex(ValueError, r'text\.npz: cannot be read as an \.npz file'):
            data.data_shape(_input_config(dataset='npz', path=str(text)))

    def test_shape_and_info_read_no_image_arrays(self):
        arrays = {k: v for k, v in _npz_arrays().items() if 'labels' not in k}
        path = _write_npz(self.dir / 'h.npz', **arrays)
        config = _input_config(dataset='npz', path=path)
        with mock.patch.object(np, 'load', side_effect=AssertionError('read an array')):
            self.assertEqual(data.data_shape(config), (6, 5, 1))
            self.assertFalse(data.dataset_info(config)['has_labels'])

    def test_conditional_model_needs_labels_in_the_file(self):
        arrays = {k: v for k, v in _npz_arrays().items() if 'labels' not in k}
        config = test_config.get_config()
        config.input.dataset = 'npz'
        config.input.path = _write_npz(self.dir / 'nolabels.npz', **arrays)
        config.model.use_labels = True
        with self.assertRaisesRegex(
            ValueError, r"use_labels=True .* but config\.input\.path='.*nolabels\.npz' has none"
        ):
            config_validation.validate(config)
        config.input.path = _write_npz(self.dir / 'labels.npz', **_npz_arrays())
        config.model.num_classes = 3  # The file's labels go up to 3: 4 classes.
        with self.assertRaisesRegex(ValueError, r'num_classes=3 is smaller than the 4 classes'):
            config_validation.validate(config)

    def test_recorded_facts_rebuild_without_the_file(self):
        path = self.dir / 'r.npz'
        _write_npz(path, **_npz_arrays())
        config = test_config.get_config()
        config.input.dataset = 'npz'
        config.input.path = str(path)
        config.input.pad_to_32 = True
        recorded = data.record_data_facts(config)
        self.assertIsNone(config.input.data_shape)  # The caller's config is not modified.
        self.assertEqual(tuple(recorded.input.data_shape), (32, 32, 1))
        self.assertEqual(recorded.input.num_classes, 4)
        self.assertEqual(data.record_data_facts(recorded).to_dict(), recorded.to_dict())
        # As evaluation reads it back from config.json (a list), on a machine without the file.
        loaded = ml_collections.ConfigDict(json.loads(recorded.to_json_best_effort()))
        loaded.input.num_test_examples = None
        path.unlink()
        self.assertEqual(data.data_shape(loaded.input), (32, 32, 1))
        only_shape = copy.deepcopy(loaded.input)
        only_shape.num_classes = None
        self.assertEqual(data.data_shape(only_shape), (32, 32, 1))
        self.assertEqual(data.dataset_info(loaded.input)['num_classes'], 4)
        config_validation.validate(loaded)
        # Data that changed since the run recorded them are an error, not a silent rebuild.
        _write_npz(path, **_npz_arrays(shape=(6, 5, 3)))
        with self.assertRaisesRegex(
            ValueError,
            r'input\.data_shape=\(32, 32, 1\) is recorded in the config, but '
            r"input\.path='.*r\.npz' now gives \(32, 32, 3\)",
        ):
            data.get_datasets(loaded.input)
        _write_npz(path, **dict(_npz_arrays(), test_labels=np.full(12, 9)))
        with self.assertRaisesRegex(
            ValueError, r'input\.num_classes=4 is recorded in the config, but .* now gives 10'
        ):
            data.get_datasets(loaded.input)
        for name in ('digits', 'mnist'):
            config.input.dataset, config.input.path = name, None
            self.assertIsNone(data.record_data_facts(config).input.data_shape)

    def test_trains_end_to_end(self):
        arrays = _npz_arrays(num_train=64, num_test=16, shape=(8, 8))
        _write_npz(self.dir / 'mine.npz', **arrays)
        config = test_config.get_config()
        config.num_train_steps = 6
        config.eval_every_steps = 6
        config.checkpoint_every_steps = 6
        config.input.dataset = 'npz'
        config.input.path = 'mine.npz'  # Relative: recorded as given.
        config.input.num_test_examples = None
        config.model.use_labels = True
        old = os.getcwd()
        os.chdir(self.dir)
        self.addCleanup(os.chdir, old)
        result = trainer.train_and_evaluate(config, self.dir / 'run')
        self.assertEqual(result['step'], 6)
        self.assertTrue(np.isfinite(result['elbo']))
        self.assertEqual(result['num_examples'], 16)  # The file's test split.
        saved = json.loads((self.dir / 'run' / 'config.json').read_text())
        self.assertEqual(saved['input']['path'], 'mine.npz')
        self.assertEqual(saved['input']['data_shape'], [8, 8, 1])
        self.assertEqual(saved['input']['num_classes'], 4)
        self.assertIsNone(config.input.data_shape)
        # The same command resumes (here: finds the run finished) instead of refusing.
        self.assertEqual(trainer.train_and_evaluate(config, self.dir / 'run')['step'], 6)


class OlderRunConfigTest(parameterized.TestCase):
    def test_config_json_without_the_new_input_keys(self):
        """A run recorded before input.path/download/data_shape/num_classes existed still loads."""
        saved = json.loads(test_config.get_config().to_json_best_effort())
        for key in ('path', 'download', 'data_shape', 'num_classes'):
            del saved['input'][key]
        config = ml_collections.ConfigDict(saved)
        config_validation.validate(config)
        self.assertEqual(data.data_shape(config.input), (8, 8, 1))
        self.assertEqual(data.dataset_info(config.input)['num_classes'], 10)
        train, _ = data.get_datasets(config.input, likelihood=config.model.likelihood)
        self.assertEqual(train['image'].shape, (1437, 8, 8, 1))


class GenericTfdsTest(parameterized.TestCase):
    """'tfds:<name>': facts from the builder's info; real data where prepared, else mocked."""

    def setUp(self):
        super().setUp()
        self.addCleanup(data_sources.read_tfds_split.cache_clear)

    def _require_real_data(self):
        if not (_TFDS_DIR / 'mnist').is_dir():
            self.skipTest(f'{_TFDS_DIR}/mnist is absent (prepared TFDS copies).')

    def test_generic_mnist_equals_the_curated_path(self):
        self._require_real_data()
        overrides = dict(data_dir=str(_TFDS_DIR), num_train_examples=50, num_test_examples=300)
        curated = data.get_datasets(_input_config(dataset='mnist', **overrides))
        data_sources.read_tfds_split.cache_clear()  # Read again, through the generic path.
        generic = data.get_datasets(_input_config(dataset='tfds:mnist', **overrides))
        for a, b in zip(curated, generic, strict=True):
            np.testing.assert_array_equal(a['image'], b['image'])
            np.testing.assert_array_equal(a['label'], b['label'])
        self.assertGreater(len(np.unique(generic[1]['label'])), 5)
        config = _input_config(dataset='tfds:mnist', data_dir=str(_TFDS_DIR))
        self.assertEqual(data.data_shape(config), data.data_shape(_input_config(dataset='mnist')))
        self.assertEqual(data.dataset_info(config), data.dataset_info('mnist'))

    def test_generic_binarized_mnist_is_refused_not_scaled(self):
        self._require_real_data()
        config = _input_config(
            dataset='tfds:binarized_mnist',
            data_dir=str(_TFDS_DIR),
            num_train_examples=20,
            num_test_examples=20,
        )
        self.assertFalse(data.dataset_info(config)['has_labels'])
        with self.assertRaisesRegex(ValueError, r"only the values 0 and 1.*'binarized_mnist'"):
            data.get_datasets(config)

    def test_any_tfds_image_set_under_mock_data(self):
        import tensorflow_datasets as tfds

        data_dir = _tempdir(self)
        self.enter_context(
            mock.patch('tensorflow_datasets.testing.mocking._getitems', _fixed_mock_getitems)
        )
        self.enter_context(
            mock.patch.object(tfds.core.DatasetBuilder, 'is_prepared', return_value=True)
        )
        self.enter_context(tfds.testing.mock_data(num_examples=9))
        config = _input_config(dataset='tfds:cifar10', data_dir=data_dir, num_train_examples=4)
        self.assertEqual(data.data_shape(config), (32, 32, 3))
        self.assertEqual(
            data.dataset_info(config), dict(num_classes=10, is_image=True, has_labels=True)
        )
        train, test = data.get_datasets(config)
        source = tfds.data_source('cifar10', split='test', data_dir=data_dir, download=False)
        expected = np.stack([source[i]['image'] for i in range(9)]).astype(np.float64) / 255
        self.assertEqual(test['image'].dtype, np.uint8)
        np.testing.assert_allclose(_model_input(test['image'], config), expected, rtol=1e-6)
        np.testing.assert_array_equal(test['label'], [int(source[i]['label']) for i in range(9)])
        self.assertEqual(train['image'].shape, (4, 32, 32, 3))
        full = test_config.get_config()
        full.input = config
        recorded = data.record_data_facts(full)
        self.assertEqual(tuple(recorded.input.data_shape), (32, 32, 3))
        self.assertEqual(recorded.input.num_classes, 10)

    def test_not_prepared_with_download_off_says_where_and_how(self):
        empty = _tempdir(self)
        with mock.patch('tensorflow_datasets.data_source') as data_source:
            with self.assertRaises(FileNotFoundError) as raised:
                data.get_datasets(_input_config(dataset='tfds:cifar10', data_dir=empty))
        data_source.assert_not_called()  # Never asked TFDS for (or to download) the data.
        message = str(raised.exception)
        self.assertIn(f"'cifar10' (version 3.0.2) is not prepared in data dir '{empty}'", message)
        self.assertIn(f'tfds build cifar10 --data_dir {empty}', message)
        self.assertIn('input.download=True', message)

    def test_download_flag_lets_tfds_prepare(self):
        empty = _tempdir(self)

        class Asked(Exception):
            pass

        with mock.patch('tensorflow_datasets.data_source', side_effect=Asked) as data_source:
            with self.assertRaises(Asked):
                data.get_datasets(
                    _input_config(dataset='tfds:cifar10', data_dir=empty, download=True)
                )
        data_source.assert_called_once_with('cifar10', split='train', data_dir=empty, download=True)

    @parameterized.named_parameters(
        ('text', 'imdb_reviews'), ('variable_image_size', 'cats_vs_dogs')
    )
    def test_sets_without_a_fixed_shape_image_are_refused(self, name):
        empty = _tempdir(self)  # The builders' info comes from their code: nothing is read.
        with self.assertRaisesRegex(
            ValueError, rf"TFDS data set '{name}' has features .*fixed shape \[H, W, C\]"
        ):
            data.data_shape(_input_config(dataset=f'tfds:{name}', data_dir=empty))

    def test_unknown_name_lists_what_was_tried(self):
        empty = _tempdir(self)
        Path(empty, 'my_set').mkdir()
        with self.assertRaises(ValueError) as raised:
            data.data_shape(_input_config(dataset='tfds:no_such_set', data_dir=empty))
        message = str(raised.exception)
        self.assertIn("TFDS data set 'no_such_set' was not found", message)
        self.assertIn('registered in tensorflow-datasets', message)
        self.assertIn(f"data dir '{empty}' (holds: my_set)", message)
        self.assertIn(f'tfds build no_such_set --data_dir {empty}', message)


class StoredImagesTest(parameterized.TestCase):
    """Images stay as stored in memory (one byte a pixel); the step scales and pads them."""

    def setUp(self):
        super().setUp()
        self.dir = Path(_tempdir(self))

    def _npz(self, images):
        return _write_npz(self.dir / 'x.npz', train_images=images, test_images=images[:3])

    @parameterized.named_parameters(
        ('digits', {}, np.uint8, 1437 * 64),
        ('digits_static', dict(binarize='static'), np.bool_, 1437 * 64),
        ('digits_dynamic_padded', dict(binarize='dynamic', pad_to_32=True), np.uint8, 1437 * 64),
        ('toy', dict(dataset='two_moons', toy_num_examples=50), np.float32, 50 * 2 * 4),
    )
    def test_dtype_and_bytes_in_memory(self, overrides, dtype, nbytes):
        train, _ = data.get_datasets(_input_config(**overrides))
        self.assertEqual(train['image'].dtype, dtype)
        self.assertEqual(train['image'].nbytes, nbytes)

    @parameterized.named_parameters(
        ('uint8', np.uint8, np.uint8),
        ('bool', np.bool_, np.bool_),
        ('float64_in_unit_interval', np.float64, np.float32),
    )
    def test_npz_kept_as_stored(self, file_dtype, dtype):
        images = (np.random.default_rng(0).random((9, 4, 5, 3)) * 255).astype(np.uint8)
        images = images > 127 if file_dtype is np.bool_ else images
        images = images / 255.0 if file_dtype is np.float64 else images
        train, _ = data.get_datasets(_input_config(dataset='npz', path=self._npz(images)))
        self.assertEqual(train['image'].dtype, dtype)
        self.assertEqual(train['image'].nbytes, images.size * np.dtype(dtype).itemsize)

    def test_static_binarisation_in_blocks_is_one_draw(self):
        # The draw of the float path before images stayed 8-bit: one call, whole split.
        stored = data_sources.load_digits()['train']['image']
        grey = stored.astype(np.float32) / np.float32(16)
        uniform = np.random.default_rng(0).random(grey.shape, dtype=np.float32)
        expected = uniform < grey
        with mock.patch.object(stored_images, 'BLOCK', 100):  # 15 blocks, the last partial
            blocked = data.binarize_static(stored, seed=0, max_value=16)
        self.assertEqual(blocked.dtype, np.bool_)
        np.testing.assert_array_equal(blocked, expected)
        train, _ = data.get_datasets(_input_config(binarize='static'))
        np.testing.assert_array_equal(train['image'], expected)

    def test_uint8_support_check_gives_the_float_message(self):
        images = np.zeros((6, 4, 4), np.uint8)
        images[1, 2, 3], images[4, 0, 0], images[5, 1, 1] = 255, 51, 102
        path = self._npz(images)
        floats = images.astype(np.float32) / np.float32(255)
        with self.assertRaises(ValueError) as expected:
            distributions.check_support('bernoulli', floats)
        with self.assertRaises(ValueError) as raised:
            data.get_datasets(_input_config(dataset='npz', path=path), likelihood='bernoulli')
        self.assertEqual(str(raised.exception), f"{path}: 'train_images': {expected.exception}")
        self.assertIn('2 values are not (data range [0, 1], e.g. 0.2)', str(raised.exception))
        # 0 and 255 only, or a likelihood over [0, 1]: fine.
        data.get_datasets(_input_config(dataset='npz', path=path), likelihood='gaussian')
        path = self._npz(np.where(images > 0, 255, 0).astype(np.uint8))
        data.get_datasets(_input_config(dataset='npz', path=path), likelihood='bernoulli')


if __name__ == '__main__':
    absltest.main()
