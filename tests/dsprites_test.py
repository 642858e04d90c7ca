"""Tests for vae_jax.dsprites: the factor grid, the renderer and the data set name."""

import jax
import numpy as np
from absl.testing import absltest, parameterized

from configs import default as default_config
from vae_jax import data, dsprites


def _all_factors():
    grid = np.meshgrid(*[np.arange(n) for n in dsprites.FACTOR_SIZES], indexing='ij')
    return np.stack(grid, -1).reshape(-1, 5)


class FactorIndexTest(parameterized.TestCase):
    def test_index_order_is_the_originals_and_round_trips_exactly(self):
        factors = _all_factors()  # C order: position y fastest, shape slowest, as the files
        index = dsprites.factors_to_index(factors)
        np.testing.assert_array_equal(index, np.arange(dsprites.NUM_IMAGES))
        np.testing.assert_array_equal(dsprites.index_to_factors(index), factors)
        self.assertEqual(dsprites.NUM_IMAGES, 737_280)

    def test_known_positions(self):
        # Image 1 moves position y one step; image 1024 one orientation step; 245760 the heart's
        # first image is 2 * 6 * 40 * 32 * 32.
        np.testing.assert_array_equal(
            dsprites.index_to_factors([1, 32, 1024, 40960, 245760, 491520]),
            [[0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0],
             [1, 0, 0, 0, 0], [2, 0, 0, 0, 0]],
        )  # fmt: skip

    def test_values(self):
        values = dsprites.factor_values([[2, 5, 39, 31, 0], [0, 0, 0, 0, 31]])
        np.testing.assert_allclose(values[0], [3, 1.0, 2 * np.pi, 1.0, 0.0])
        np.testing.assert_allclose(values[1], [1, 0.5, 0.0, 0.0, 1.0])

    @parameterized.named_parameters(
        ('out_of_range', [[3, 0, 0, 0, 0]], 'shape'),
        ('negative', [[0, 0, 0, -1, 0]], 'position_x'),
        ('wrong_width', [[0, 0, 0, 0]], r'\[N, 5\]'),
        ('float', [[0.0, 0, 0, 0, 0]], 'integer'),
    )
    def test_bad_factors(self, factors, message):
        with self.assertRaisesRegex(ValueError, message):
            dsprites.factors_to_index(np.asarray(factors))

    def test_sample_factors_covers_each_range_uniformly(self):
        factors = dsprites.sample_factors(jax.random.key(0), 20_000)
        self.assertEqual(factors.shape, (20_000, 5))
        for k, size in enumerate(dsprites.FACTOR_SIZES):
            counts = np.bincount(factors[:, k], minlength=size)
            self.assertLen(counts, size)
            # Each count is Binomial(n, 1/size): within 5 standard deviations.
            sd = np.sqrt(20_000 * (1 / size) * (1 - 1 / size))
            self.assertLess(np.abs(counts - 20_000 / size).max(), 5 * sd)


class RendererTest(parameterized.TestCase):
    def test_every_combination_renders_a_sprite_inside_the_image(self):
        # All 720 (shape, scale, orientation) sprites at the four corner positions; positions
        # are exact translates (test below), so this covers all 737,280 images' pixels.
        grid = dsprites._grid_factors()
        for x in (0, 31):
            for y in (0, 31):
                factors = grid.copy()
                factors[:, 3], factors[:, 4] = x, y
                images = dsprites.images_from_factors(factors)
                self.assertEqual(images.shape, (720, 64, 64, 1))
                self.assertTrue(np.all(images.sum(axis=(1, 2, 3)) > 30))  # ellipse: 39 px
                border = images[:, [0, -1]].sum() + images[:, :, [0, -1]].sum()
                self.assertEqual(border, 0)  # never clipped by the image's edge

    def test_positions_are_one_pixel_translates(self):
        base = np.array([[2, 3, 7, 0, 0]])
        moved = np.array([[2, 3, 7, 5, 9]])  # 5 columns right, 9 rows down
        a, b = dsprites.images_from_factors(base)[0, ..., 0], dsprites.images_from_factors(moved)
        np.testing.assert_array_equal(np.roll(a, (9, 5), axis=(0, 1)), b[0, ..., 0])

    def test_position_x_is_the_column_and_y_the_row(self):
        image = dsprites.images_from_factors(np.array([[0, 5, 0, 31, 0]]))[0, ..., 0]
        rows, cols = np.nonzero(image)
        # Centre at 16 + 31 = 47 horizontally and 16 vertically (pixel edges at integers).
        self.assertAlmostEqual(cols.mean() + 0.5, 47.0, delta=0.01)
        self.assertAlmostEqual(rows.mean() + 0.5, 16.0, delta=0.01)

    @parameterized.named_parameters(('square', 0), ('ellipse', 1), ('heart', 2))
    def test_orientation_zero_and_two_pi_give_the_same_image(self, shape):
        images = dsprites.images_from_factors(
            np.array([[shape, 4, 0, 10, 20], [shape, 4, 39, 10, 20]])
        )
        np.testing.assert_array_equal(images[0], images[1])

    def test_upright_square_at_equal_positions_is_symmetric_about_the_diagonal(self):
        # Centre (31, 31) on the diagonal: transposing swaps x and y, which leaves the square.
        square = dsprites.images_from_factors(np.array([[0, 5, 0, 15, 15]]))[0, ..., 0]
        np.testing.assert_array_equal(square, square.T)

    @parameterized.named_parameters(('square', 0), ('ellipse', 1), ('heart', 2))
    def test_pixel_areas_match_the_shapes_areas(self, shape):
        # Reference area of each outline, in 64x64 pixels at scale 1: closed forms for the
        # square (20 x 20) and the ellipse (pi 10 5); the heart's by a 1500^2 midpoint grid.
        if shape == 0:
            area = 400.0
        elif shape == 1:
            area = np.pi * 10 * 5
        else:
            t = (np.arange(1500) + 0.5) / 1500 * 2.4 - 1.2  # sprite units, 1 = 10 px
            u, v = np.meshgrid(t, t)
            area = dsprites._inside(2, u, v).mean() * (2.4 * 10) ** 2
        scales = np.linspace(0.5, 1.0, 6)
        for s_index, scale in enumerate(scales):
            factors = np.array([[shape, s_index, o, 12, 12] for o in range(40)])
            counts = dsprites.images_from_factors(factors).sum(axis=(1, 2, 3))
            # Pixel-centre sampling misses or adds at most the boundary pixels; on average over
            # the 40 orientations the error is a small fraction of the perimeter (~70 px at
            # scale 1): within 3% of the area plus 2 pixels.
            expected = area * scale**2
            self.assertAlmostEqual(counts.mean(), expected, delta=0.03 * expected + 2)

    def test_32x32_is_the_2x2_downsampling(self):
        factors = dsprites.sample_factors(jax.random.key(1), 50)
        big = dsprites.images_from_factors(factors)
        small = dsprites.images_from_factors(factors, size=32)
        self.assertEqual(small.shape, (50, 32, 32, 1))
        blocks = big[:, ::2, ::2] + big[:, 1::2, ::2] + big[:, ::2, 1::2] + big[:, 1::2, 1::2]
        np.testing.assert_array_equal(small, (blocks >= 2).astype(np.float32))
        # Area scales by 1/4, within the boundary's share.
        np.testing.assert_allclose(small.sum((1, 2, 3)), big.sum((1, 2, 3)) / 4, rtol=0.3, atol=3)

    def test_bad_size(self):
        with self.assertRaisesRegex(ValueError, 'size=48'):
            dsprites.images_from_factors(np.zeros((1, 5), np.int64), size=48)


class TfdsRecordsTest(parameterized.TestCase):
    @parameterized.named_parameters(('64', 64), ('32', 32))
    def test_shuffled_records_are_put_back_in_the_original_order(self, size):
        # Records as TFDS's dsprites builder stores them (image 0/1 uint8 [64, 64, 1] and the
        # five label_* features), in a shuffled order.
        rng = np.random.default_rng(0)
        picked = rng.choice(dsprites.NUM_IMAGES, 40, replace=False)
        factors = dsprites.index_to_factors(picked)
        images = dsprites.images_from_factors(factors).astype(np.uint8)
        records = [
            {**dict(zip(dsprites.TFDS_FEATURES, f.tolist(), strict=True)), 'image': img}
            for f, img in zip(factors, images, strict=True)
        ]
        index, out = dsprites._index_and_images(records, size=size)
        np.testing.assert_array_equal(index, picked)
        np.testing.assert_array_equal(out, dsprites.images_from_factors(factors, size=size))
        self.assertEqual(out.dtype, np.uint8)

    def test_a_source_of_the_wrong_length_is_refused(self):
        with self.assertRaisesRegex(ValueError, '10 records; dSprites has 737280'):
            dsprites._from_records([{}] * 10)


class DatasetTest(parameterized.TestCase):
    def _input(self, name, **kwargs):
        config = default_config.get_config().input
        config.dataset = name
        config.num_train_examples = 300
        config.num_test_examples = 200
        config.data_dir = self.create_tempdir().full_path  # nothing prepared: the renderer
        config.update(kwargs)
        return config

    @parameterized.named_parameters(('64', 'dsprites', 64), ('32', 'dsprites32', 32))
    def test_get_datasets_gives_images_factors_and_shape_labels(self, name, size):
        train, test = data.get_datasets(self._input(name), likelihood='bernoulli')
        self.assertEqual(train['image'].shape, (300, size, size, 1))
        self.assertEqual(test['image'].shape, (200, size, size, 1))
        self.assertEqual(data.data_shape(self._input(name)), (size, size, 1))
        for split in (train, test):
            np.testing.assert_array_equal(split['label'], split['factors'][:, 0])
            rendered = dsprites.images_from_factors(split['factors'], size=size)
            self.assertEqual(split['image'].dtype, np.bool_)  # held as stored: 1 byte a pixel
            np.testing.assert_array_equal(split['image'], rendered)
        # The splits never share a factor combination.
        train_index = set(dsprites.factors_to_index(train['factors']).tolist())
        test_index = set(dsprites.factors_to_index(test['factors']).tolist())
        self.assertEmpty(train_index & test_index)
        self.assertEqual(data.value_grid(self._input(name))['num_levels'], 2)

    def test_test_split_does_not_depend_on_the_train_size(self):
        _, a = data.get_datasets(self._input('dsprites32'))
        _, b = data.get_datasets(self._input('dsprites32', num_train_examples=20))
        np.testing.assert_array_equal(a['factors'], b['factors'])

    def test_splits_larger_than_the_set_are_an_error(self):
        config = self._input('dsprites32', num_train_examples=737_280)
        with self.assertRaisesRegex(ValueError, 'num_train_examples=737280'):
            data.get_datasets(config)

    def test_info(self):
        info = data.dataset_info('dsprites')
        self.assertEqual((info['num_classes'], info['has_labels']), (3, True))


if __name__ == '__main__':
    absltest.main()
