"""Tests for vae_jax.plots: pixel sizes, content, and that each picture shows what it claims."""

import json
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from absl.testing import absltest, parameterized
from matplotlib.axes import Axes
from PIL import Image
from scipy import stats

from vae_jax import plots

PAD = plots.PAD
PIXEL_VARIANCE_FLOOR = 50.0  # uint8 units; a blank (single-colour) picture has 0


def _read_png(path):
    return np.asarray(Image.open(path).convert('RGB'))


def _colourful_pixels(image):
    """Pixels that are neither white, black nor grey (axes and text are grey-scale)."""
    image = image.astype(np.int32)
    return int(np.sum(image.max(-1) - image.min(-1) > 40))


def _tile(image, row, col, h, w, left_labels=False):
    """Tile (row, col) of a scale-1 grid with tiles of h x w pixels, below its title strip."""
    top = plots.TITLE_PIXELS + PAD + row * (h + PAD)
    left = (plots.LABEL_PIXELS if left_labels else 0) + PAD + col * (w + PAD)
    return image[top : top + h, left : left + w]


def _has_text(strip):
    """Whether a strip of a white canvas holds dark (text) pixels."""
    return bool(np.any(strip.min(-1) < 100))


class PlotsTestCase(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        # tempfile, not absltest's create_tempdir: that needs absl flags, which pytest never parses.
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)

    def assert_written(self, image, path, shape):
        """The returned image has `shape`, equals the PNG, and is not blank."""
        self.assertEqual(image.dtype, np.uint8)
        self.assertEqual(image.shape, shape)
        np.testing.assert_array_equal(_read_png(path), image)
        self.assertGreater(image.astype(np.float64).var(), PIXEL_VARIANCE_FLOOR)


class GridTest(PlotsTestCase):
    @parameterized.named_parameters(('grey', 1), ('colour', 3))
    def test_reconstructions_layout(self, channels):
        rng = np.random.default_rng(0)
        inputs = rng.random((5, 8, 6, channels)).astype(np.float32)
        recons = 1.0 - inputs
        path = self.dir / 'recon.png'
        image = plots.reconstructions(inputs, recons, path, ncols=3, scale=1)
        # 2 rows of 3 inputs, each followed by a row of reconstructions: 4 tile rows.
        grid = (4 * (8 + PAD) + PAD, 3 * (6 + PAD) + PAD)
        shape = (plots.TITLE_PIXELS + grid[0], plots.LABEL_PIXELS + grid[1], 3)
        self.assert_written(image, path, shape)
        for i in range(5):
            r, c = divmod(i, 3)
            expected_in = np.round(np.broadcast_to(inputs[i], (8, 6, 3)) * 255)
            expected_out = np.round(np.broadcast_to(recons[i], (8, 6, 3)) * 255)
            tile_in = _tile(image, 2 * r, c, 8, 6, left_labels=True)
            tile_out = _tile(image, 2 * r + 1, c, 8, 6, left_labels=True)
            np.testing.assert_allclose(tile_in, expected_in, atol=1)
            np.testing.assert_allclose(tile_out, expected_out, atol=1)
        self.assertTrue(_has_text(image[: plots.TITLE_PIXELS]))  # the title

    def test_reconstructions_have_row_labels(self):
        rng = np.random.default_rng(0)
        inputs = rng.random((16, 32, 32, 1)).astype(np.float32)
        texts = []
        original = plots.Figure.text

        def spy(fig, x, y, text, **kwargs):
            texts.append(text)
            return original(fig, x, y, text, **kwargs)

        with mock.patch.object(plots.Figure, 'text', spy):
            image = plots.reconstructions(inputs, inputs, self.dir / 'r.png')
        # 16 images in 2 rows of 8: data, reconstruction, data, reconstruction.
        self.assertEqual(texts[1:], ['data', 'reconstruction'] * 2)
        label_strip = image[plots.TITLE_PIXELS :, : plots.LABEL_PIXELS]
        rows = np.array_split(label_strip, 4, axis=0)
        self.assertTrue(all(_has_text(row) for row in rows))  # every row has its label drawn

    @parameterized.named_parameters(('mnist', 28), ('padded', 32), ('digits', 8))
    def test_default_scale_makes_digits_legible(self, size):
        inputs = np.random.default_rng(0).random((16, size, size, 1)).astype(np.float32)
        image = plots.reconstructions(inputs, inputs, self.dir / 'r.png')
        scale = (image.shape[1] - plots.LABEL_PIXELS) // (8 * (size + PAD) + PAD)
        self.assertGreaterEqual(size * scale, plots.MIN_TILE_PIXELS)
        # Today's 32x32 case was 265 x 133 pixels; now each digit is >= 56 pixels tall.
        self.assertGreaterEqual(image.shape[1], plots.LABEL_PIXELS + 8 * plots.MIN_TILE_PIXELS)

    def test_reconstructions_rejects_mismatched_shapes(self):
        with self.assertRaisesRegex(ValueError, 'same shape'):
            plots.reconstructions(np.zeros((2, 4, 4, 1)), np.zeros((3, 4, 4, 1)), self.dir / 'a')

    def test_samples_size_and_default_scale(self):
        images = np.random.default_rng(1).random((10, 28, 28, 1))
        path = self.dir / 'samples.png'
        image = plots.samples(images, path, scale=2)  # 4 columns, 3 rows
        shape = (plots.TITLE_PIXELS + 2 * (3 * 29 + PAD), 2 * (4 * 29 + PAD), 3)
        self.assert_written(image, path, shape)
        default = plots.samples(images, path)
        self.assertGreaterEqual(max(default.shape[:2]), plots.MIN_GRID_PIXELS)
        self.assertEqual(default.shape[1] % (4 * 29 + PAD), 0)  # an integer enlargement

    def test_samples_rejects_bad_channels(self):
        with self.assertRaisesRegex(ValueError, 'C = 1 or 3'):
            plots.samples(np.zeros((4, 8, 8, 2)), self.dir / 'bad.png')


class ManifoldTest(PlotsTestCase):
    def test_latent2_decodes_the_quantile_grid_it_claims(self):
        n, h, w = 5, 4, 6
        calls = []

        def decode_mean(z):
            # Draws its z into the image: left half Phi(z_1), right half Phi(z_2).
            calls.append(np.array(z))
            images = np.empty((z.shape[0], h, w, 1), np.float32)
            images[:, :, : w // 2] = stats.norm.cdf(z[:, 0])[:, None, None, None]
            images[:, :, w // 2 :] = stats.norm.cdf(z[:, 1])[:, None, None, None]
            return images

        path = self.dir / 'manifold.png'
        image, z = plots.manifold(decode_mean, 2, path, n=n, scale=1)
        grid = (n * (h + PAD) + PAD, n * (w + PAD) + PAD)
        shape = (
            plots.TITLE_PIXELS + grid[0] + plots.AXIS_LABEL_PIXELS,
            plots.LABEL_PIXELS + grid[1],
            3,
        )
        self.assert_written(image, path, shape)
        self.assertTrue(_has_text(image[-plots.AXIS_LABEL_PIXELS :]))  # the z 1 axis label
        self.assertTrue(_has_text(image[plots.TITLE_PIXELS :, : plots.LABEL_PIXELS]))  # z 2
        u = stats.norm.ppf(np.linspace(0.05, 0.95, n))
        self.assertLen(calls, 1)
        np.testing.assert_array_equal(calls[0], z.reshape(n * n, 2))
        for i in range(n):
            for j in range(n):
                np.testing.assert_allclose(z[i, j], [u[j], u[n - 1 - i]], rtol=1e-6)
                tile = _tile(image, i, j, h, w, left_labels=True).astype(np.float64) / 255
                np.testing.assert_allclose(tile[:, : w // 2], 0.05 + 0.9 * j / (n - 1), atol=3e-3)
                np.testing.assert_allclose(
                    tile[:, w // 2 :], 0.05 + 0.9 * (n - 1 - i) / (n - 1), atol=3e-3
                )

    def test_higher_latent_grid_lies_in_the_basis_plane(self):
        d, n = 5, 4
        basis, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(d, 2)))
        basis = basis.T  # [2, D] orthonormal rows
        calls = []

        def decode_mean(z):
            calls.append(np.array(z))
            return np.tile(stats.norm.cdf(z[:, :1])[:, :, None, None], (1, 3, 3, 1))

        image, z = plots.manifold(decode_mean, d, self.dir / 'm.png', n=n, basis=basis)
        self.assertEqual(z.shape, (n, n, d))
        np.testing.assert_array_equal(calls[0], z.reshape(n * n, d))
        u = stats.norm.ppf(np.linspace(0.05, 0.95, n))
        coords = z @ basis.T  # [n, n, 2]
        np.testing.assert_allclose(coords[..., 0], np.tile(u, (n, 1)), atol=1e-5)
        np.testing.assert_allclose(coords[..., 1], np.tile(u[::-1, None], (1, n)), atol=1e-5)
        np.testing.assert_allclose(z, coords @ basis, atol=1e-5)  # nothing outside the plane
        self.assertGreater(image.astype(np.float64).var(), PIXEL_VARIANCE_FLOOR)

    def test_latent1_is_one_row(self):
        z = plots.manifold_grid(1, n=7)
        self.assertEqual(z.shape, (1, 7, 1))
        np.testing.assert_allclose(z[0, :, 0], stats.norm.ppf(np.linspace(0.05, 0.95, 7)))

    def test_rejects_bad_basis(self):
        with self.assertRaisesRegex(ValueError, r'\[2, D\]'):
            plots.manifold_grid(4, basis=np.eye(2, 3))


class ChartTest(PlotsTestCase):
    def assert_chart(self, image, path, shape):
        self.assert_written(image, path, shape)
        self.assertGreater(_colourful_pixels(image), 300)

    @parameterized.named_parameters(('labels', True), ('no_labels', False))
    def test_latent_scatter_2d(self, with_labels):
        rng = np.random.default_rng(3)
        labels = np.repeat(np.arange(4), 100)
        z = rng.normal(size=(400, 2)) + 3 * np.stack([np.cos(labels), np.sin(labels)], 1)
        path = self.dir / 'scatter.png'
        image = plots.latent_scatter(z, labels if with_labels else None, path)
        side = int(plots.CHART_INCHES * plots.DPI)
        self.assert_chart(image, path, (side, side, 3))

    def test_latent_scatter_uses_top2_principal_directions(self):
        rng = np.random.default_rng(4)
        d, n = 6, 600
        plane, _ = np.linalg.qr(rng.normal(size=(d, 2)))  # [D, 2] the dominant plane
        coords = rng.normal(size=(n, 2)) * [5.0, 3.0]
        z = coords @ plane.T + 0.05 * rng.normal(size=(n, d)) + 2.0
        labels = (coords[:, 0] > 0).astype(np.int32)

        mean, basis, ratio = plots.pca(z)
        np.testing.assert_allclose(np.abs(basis @ plane), np.eye(2), atol=0.02)
        self.assertGreater(ratio.sum(), 0.99)

        original = Axes.scatter
        with mock.patch.object(Axes, 'scatter', autospec=True, side_effect=original) as scatter:
            image = plots.latent_scatter(z, labels, self.dir / 'pca.png')
        self.assertGreater(_colourful_pixels(image), 300)
        _, x, y = scatter.call_args.args[:3]
        xy = np.stack([np.asarray(x), np.asarray(y)], axis=1)
        # The plotted coordinates are the data's coordinates in its dominant plane (up to a
        # rotation/reflection): an orthonormal map from the centred data onto xy.
        centred = z - z.mean(0)
        np.testing.assert_allclose(xy, centred @ basis.T, atol=1e-9)
        self.assertGreater(np.var(xy[:, 0]), 20.0)
        self.assertGreater(np.var(xy[:, 1]), 7.0)

    def test_latent_scatter_rejects_mismatched_labels(self):
        with self.assertRaisesRegex(ValueError, 'labels'):
            plots.latent_scatter(np.zeros((5, 2)), np.zeros(4), self.dir / 'x.png')

    @parameterized.named_parameters(('with_true', True), ('model_only', False))
    def test_toy_density(self, with_true):
        rng = np.random.default_rng(5)
        angles = 2 * np.pi * np.arange(8) / 8
        centres = 5 * np.stack([np.cos(angles), np.sin(angles)], 1)
        data = centres[rng.integers(0, 8, 500)] + 0.2 * rng.normal(size=(500, 2))
        model_samples = centres[rng.integers(0, 8, 300)] + 0.5 * rng.normal(size=(300, 2))
        gx, gy = np.linspace(-7, 7, 60), np.linspace(-6, 6, 50)
        xx, yy = np.meshgrid(gx, gy)
        points = np.stack([xx, yy], -1)[..., None, :]  # [G', G, 1, 2]
        log_mix = lambda s: np.log(np.mean(np.exp(-np.sum((points - centres) ** 2, -1) / s), -1))
        true = log_mix(0.08) if with_true else None
        path = self.dir / 'toy.png'
        image = plots.toy_density(data, model_samples, gx, gy, log_mix(0.5), true, path)
        panels = 3 if with_true else 2
        side = int(plots.CHART_INCHES * plots.DPI)
        self.assert_chart(image, path, (side, panels * side, 3))
        # meshgrid inputs are accepted too and give the same picture.
        again = plots.toy_density(data, model_samples, xx, yy, log_mix(0.5), true, path)
        np.testing.assert_array_equal(again, image)

    def test_toy_density_panels_share_one_colour_scale_with_a_colour_bar(self):
        gx, gy = np.linspace(-2, 2, 20), np.linspace(-2, 2, 20)
        xx, yy = np.meshgrid(gx, gy)
        true = -0.5 * (xx**2 + yy**2) - np.log(2 * np.pi)  # peak density 0.16
        model = -0.5 * (xx**2 + yy**2) / 4 - np.log(8 * np.pi)  # peak density 0.04
        points = np.random.default_rng(0).normal(size=(50, 2))
        images, bars = [], []
        imshow, colorbar = Axes.imshow, plots.Figure.colorbar
        with (
            mock.patch.object(Axes, 'imshow', autospec=True, side_effect=imshow) as spy_imshow,
            mock.patch.object(
                plots.Figure, 'colorbar', autospec=True, side_effect=colorbar
            ) as spy_bar,
        ):
            plots.toy_density(points, points, gx, gy, model, true, self.dir / 't.png')
            images = [c.args for c in spy_imshow.call_args_list]
            bars = spy_bar.call_args_list
        self.assertLen(images, 2)
        self.assertLen(bars, 1)
        norms = [spy_imshow.call_args_list[i].kwargs['norm'] for i in range(2)]
        self.assertIs(norms[0], norms[1])  # one scale: equal colours mean equal density
        self.assertAlmostEqual(norms[0].vmin, 0.0)
        self.assertAlmostEqual(norms[0].vmax, np.exp(true).max())  # not each panel's own max
        np.testing.assert_allclose(images[0][1], np.exp(model))  # densities, not normalised
        self.assertIn('density', bars[0].kwargs['label'])

    def test_toy_density_scale_ignores_a_single_overestimated_pixel(self):
        gx, gy = np.linspace(-2, 2, 20), np.linspace(-2, 2, 20)
        xx, yy = np.meshgrid(gx, gy)
        model = -0.5 * (xx**2 + yy**2) - np.log(2 * np.pi)  # peak density 0.16
        model[3, 4] = np.log(5.0)  # one importance-sampling outlier
        points = np.random.default_rng(0).normal(size=(50, 2))
        imshow = Axes.imshow
        with mock.patch.object(Axes, 'imshow', autospec=True, side_effect=imshow) as spy:
            plots.toy_density(points, points, gx, gy, model, None, self.dir / 't.png')
        vmax = spy.call_args.kwargs['norm'].vmax
        self.assertLess(vmax, 0.2)
        self.assertGreater(vmax, 0.1)

    def test_toy_density_rejects_transposed_density(self):
        gx, gy = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
        with self.assertRaisesRegex(ValueError, 'model_log_density'):
            plots.toy_density(
                np.zeros((2, 2)), np.zeros((2, 2)), gx, gy, np.zeros((4, 3)), None, self.dir / 'a'
            )

    def _write_metrics(self, rows):
        path = self.dir / 'metrics.jsonl'
        path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
        return path

    def test_training_curves(self):
        rows = []
        for step in range(100, 1100, 100):
            rows.append(
                {
                    'step': step,
                    'train/loss': 200 / np.sqrt(step),
                    'train/elbo': -200 / np.sqrt(step),
                    'train/recon': 150 / np.sqrt(step),
                    'train/kl': 10.0,
                    'train/steps_per_sec': 500.0,
                }
            )
            if step % 500 == 0:
                rows.append({'step': step, 'eval/elbo': -210 / np.sqrt(step), 'eval/iwae_k10': -1})
        path = self.dir / 'curves.png'
        image = plots.training_curves(self._write_metrics(rows), path)
        width, height = plots.CURVE_INCHES
        self.assert_chart(image, path, (int(height * plots.DPI), int(3 * width * plots.DPI), 3))

    @parameterized.named_parameters(('long_run', 10_000_000, 'log'), ('short_run', 1000, None))
    def test_training_curves_step_axis_and_bound_signs(self, last_step, scale):
        steps = np.unique(np.geomspace(100, last_step, 30).astype(int))
        rows = [{'step': int(t), 'train/loss': 90.0, 'eval/elbo': -95.0, 'eval/nll': 88.0}
                for t in steps]  # fmt: skip
        plotted = {}
        original_plot, original_scale = Axes.plot, Axes.set_xscale
        with (
            mock.patch.object(Axes, 'plot', autospec=True, side_effect=original_plot) as plot,
            mock.patch.object(
                Axes, 'set_xscale', autospec=True, side_effect=original_scale
            ) as set_scale,
        ):
            plots.training_curves(self._write_metrics(rows), self.dir / 'c.png')
            for call in plot.call_args_list:
                plotted[call.kwargs['label']] = np.asarray(call.args[2])
            scales = [c.args[1] for c in set_scale.call_args_list]
        self.assertEqual(scales, [scale] * 2 if scale else [])  # both panels, or none
        # -ELBO beside the NLL: the same kind of number (nats, upper bound >= NLL).
        np.testing.assert_allclose(plotted['-eval/elbo'], 95.0)
        np.testing.assert_allclose(plotted['eval/nll'], 88.0)

    def test_training_curves_single_panel_and_errors(self):
        path = self._write_metrics([{'step': s, 'train/loss': 1.0 / s} for s in (1, 2, 3)])
        image = plots.training_curves(path, self.dir / 'loss.png')
        width, height = plots.CURVE_INCHES
        self.assertEqual(image.shape, (int(height * plots.DPI), int(width * plots.DPI), 3))
        empty = self._write_metrics([])
        with self.assertRaisesRegex(ValueError, 'no loss'):
            plots.training_curves(empty, self.dir / 'empty.png')


if __name__ == '__main__':
    absltest.main()
