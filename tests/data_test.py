"""Tests for vae_jax/data.py.

Real TFDS data are read from $TFDS_DATA_DIR, else from ../shared/data/tfds beside the checkout
(where CI finds them; skipped where absent), and checked against the original files in
../shared/data/<name> where those are present. Reading a full
train split takes 5-15 s on 2 cores, so by default only the test splits are read in full; train
counts come from the data source's length and train contents from the first records.
VAE_JAX_FULL_DATA_TESTS=1 also reads the full train splits.
"""

import gzip
import importlib.util
import os
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from absl.testing import absltest, parameterized

from vae_jax import data

_REPO = Path(__file__).resolve().parents[1]
# CI clones the repository beside a shared/ folder holding the prepared TFDS copies (tfds/) and
# the original files; elsewhere set $TFDS_DATA_DIR (the original-file checks then skip).
_SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared/data'
_TFDS_DIR = Path(os.environ.get('TFDS_DATA_DIR') or _SHARED_DATA / 'tfds')
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


def _to_uint8(image, name):
    scale = 1 if name == 'binarized_mnist' else 255
    return np.rint(image.reshape(len(image), -1) * scale).astype(np.uint8)


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
        self.assertEqual(test['image'].dtype, np.float32)
        self.assertEqual(test['label'].dtype, np.int32)
        self.assertEqual(test['image'].min(), 0.0)
        self.assertEqual(test['image'].max(), 1.0)
        self.assertAlmostEqual(test['image'].mean(dtype=np.float64), _TEST_MEAN[name], delta=1e-5)
        np.testing.assert_array_equal(np.bincount(test['label']), _TEST_CLASS_COUNTS[name])
        self.assertEqual(train['image'].shape, (100, 28, 28, 1))
        np.testing.assert_array_equal(train['label'][:10], _TFDS_FIRST_TRAIN_LABELS[name])
        if name == 'binarized_mnist':
            self.assertTrue(np.isin(test['image'], [0.0, 1.0]).all())

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
            np.sort(_rows(_to_uint8(test['image'], name), test['label'])),
            np.sort(_rows(*original_test)),
        )
        # Each of the first train examples is an original train example with the same label.
        self.assertTrue(
            np.isin(
                _rows(_to_uint8(train['image'], name), train['label']), _rows(*original_train)
            ).all()
        )

    @parameterized.named_parameters(*_TFDS_NAMES)
    def test_full_train_split(self, name):
        if not _FULL:
            self.skipTest('reads a whole train split (5-15 s); set VAE_JAX_FULL_DATA_TESTS=1')
        train, _ = data.get_datasets(_tfds_config(name, num_train_examples=None))
        self.assertEqual(train['image'].shape, (_SIZES[name][0], 28, 28, 1))
        self.assertAlmostEqual(train['image'].mean(dtype=np.float64), _TRAIN_MEAN[name], delta=5e-5)
        np.testing.assert_array_equal(np.bincount(train['label']), _TRAIN_CLASS_COUNTS[name])

    def test_pad_and_static_binarize_on_mnist(self):
        _, grey = data.get_datasets(_tfds_config('mnist'))
        _, binary = data.get_datasets(_tfds_config('mnist', binarize='static', pad_to_32=True))
        self.assertEqual(binary['image'].shape, (10_000, 32, 32, 1))
        self.assertTrue(np.isin(binary['image'], [0.0, 1.0]).all())
        np.testing.assert_array_equal(binary['image'][:, :2], 0.0)
        np.testing.assert_array_equal(binary['image'][:, :, -2:], 0.0)
        # Bernoulli(pixel): the mean matches the grey mean (7.8M draws: std of the mean < 2e-4).
        centre = binary['image'][:, 2:30, 2:30]
        self.assertAlmostEqual(centre.mean(), grey['image'].mean(), delta=1e-3)

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
        self.addCleanup(data._read_tfds_split.cache_clear)

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
        np.testing.assert_allclose(test['image'], expected, rtol=1e-6)
        np.testing.assert_array_equal(test['label'], [int(source[i]['label']) for i in range(23)])
        self.assertEqual(test['image'].dtype, np.float32)
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

    def test_no_data_dir_at_all(self):
        with mock.patch.dict(os.environ, {}, clear=True):
            with self.assertRaisesRegex(ValueError, r'input\.data_dir.*TFDS_DATA_DIR'):
                data.get_datasets(_input_config(dataset='mnist'))


class DigitsTest(parameterized.TestCase):
    def test_split_sizes_range_and_stratification(self):
        from sklearn import datasets

        train, test = data.get_datasets(_input_config())
        self.assertEqual(train['image'].shape, (1437, 8, 8, 1))
        self.assertEqual(test['image'].shape, (360, 8, 8, 1))
        self.assertEqual(train['image'].dtype, np.float32)
        self.assertEqual(train['label'].dtype, np.int32)
        self.assertEqual(train['image'].min(), 0.0)
        self.assertEqual(train['image'].max(), 1.0)
        # Train + test are exactly the 1797 digits, values 0..16 scaled by 1/16.
        digits = datasets.load_digits()
        both = np.concatenate([train['image'], test['image']]).reshape(1797, 64) * 16
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
        first['image'][:] = -1.0  # Returned arrays are copies: the cache is unaffected.
        second, _ = data.get_datasets(_input_config())
        third, _ = data.get_datasets(_input_config())
        self.assertGreaterEqual(second['image'].min(), 0.0)
        np.testing.assert_array_equal(second['image'], third['image'])

    def test_pad_to_32_centres_the_image(self):
        _, plain = data.get_datasets(_input_config())
        _, padded = data.get_datasets(_input_config(pad_to_32=True))
        self.assertEqual(padded['image'].shape, (360, 32, 32, 1))
        np.testing.assert_array_equal(padded['image'][:, 12:20, 12:20], plain['image'])
        self.assertEqual(np.abs(padded['image']).sum(), np.abs(plain['image']).sum())
        self.assertEqual(data.data_shape(_input_config(pad_to_32=True)), (32, 32, 1))

    def test_static_binarize(self):
        grey, _ = data.get_datasets(_input_config())
        binary, _ = data.get_datasets(_input_config(binarize='static'))
        again, _ = data.get_datasets(_input_config(binarize='static'))
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
        ('unknown_dataset', dict(dataset='cifar10'), r"input\.dataset='cifar10'.*mnist.*digits"),
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

    @parameterized.named_parameters(
        ('mnist', 'mnist', False, (28, 28, 1)),
        ('mnist_padded', 'mnist', True, (32, 32, 1)),
        ('digits', 'digits', False, (8, 8, 1)),
    )
    def test_data_shape(self, name, pad, expected):
        self.assertEqual(data.data_shape(_input_config(dataset=name, pad_to_32=pad)), expected)


if __name__ == '__main__':
    absltest.main()
