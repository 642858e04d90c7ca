"""Tests for vae_jax.traversals: the codes, the KL ordering, and the picture of a tiny model."""

from pathlib import Path

import distrax
import jax
import numpy as np
import optax
from absl.testing import absltest
from PIL import Image

from configs import default as default_config
from configs import test as test_config
from vae_jax import build, models, pictures, plots, trained, traversals, two_layer


def tiny_model(dataset='digits', latent_dim=3):
    """A built-in VAE at its initial parameters (no training: the numbers are what they are)."""
    config = default_config.get_config()
    config.input.dataset = dataset
    config.model.latent_dim = latent_dim
    config.model.encoder = 'dense(16)-relu'
    config.model.decoder = 'dense(16)-relu-dense(out)'
    config.model.likelihood = 'bernoulli'
    parts = trained.build(config)
    state = trained.create_train_state(parts, jax.random.key(0), optax.adam(1e-3))
    return trained.TrainedModel(parts, {'params': state.params}, 0)


class TraversalTest(absltest.TestCase):
    def test_codes(self):
        codes = traversals.traversal_codes(np.array([1.0, 2.0, 3.0]), [2, 0], num_steps=3, limit=2)
        np.testing.assert_array_equal(
            codes,
            [[[1, 2, -2], [1, 2, 0], [1, 2, 2]], [[-2, 2, 3], [0, 2, 3], [2, 2, 3]]],
        )

    def test_kl_per_dimension_matches_distrax(self):
        rng = np.random.default_rng(0)
        mean, std = rng.normal(size=(4, 3)), rng.uniform(0.2, 2, size=(4, 3))
        expected = distrax.Normal(mean, std).kl_divergence(distrax.Normal(0.0, 1.0)).mean(0)
        np.testing.assert_allclose(traversals.kl_per_dimension(mean, std), expected, rtol=1e-6)

    def test_picture_tiles_are_the_decoded_traversal_rows_by_kl(self):
        model = tiny_model()
        images = np.random.default_rng(0).uniform(size=(5, 8, 8, 1)).astype(np.float32)
        path = self.create_tempdir().full_path + '/traversals.png'
        rgb = traversals.latent_traversals(model, images, path, num_steps=4, limit=2.0, scale=1)
        # Independently: the order by mean KL, and each tile decoded from its code.
        q = model.encode(images)
        mean, std = np.asarray(q.mean()), np.asarray(q.stddev())
        kl = np.mean(0.5 * (mean**2 + std**2 - 1) - np.log(std), axis=0)
        order = np.argsort(-kl)
        self.assertGreater(kl[order[0]], kl[order[-1]])  # a real ordering, not a tie
        values = [-2.0, -2 / 3, 2 / 3, 2.0]
        for r, d in enumerate(order):
            for c, value in enumerate(values):
                code = mean[0].copy()
                code[d] = value
                tile = np.asarray(model.decode(code[None]).mean())[0, ..., 0]
                top = plots.TITLE_PIXELS + plots.PAD + r * (8 + plots.PAD)
                left = plots.LABEL_PIXELS + plots.PAD + c * (8 + plots.PAD)
                np.testing.assert_allclose(
                    rgb[top : top + 8, left : left + 8, 0], np.round(tile * 255), atol=1
                )
        self.assertTrue((np.asarray(Image.open(path)) == rgb).all())

    def test_a_posterior_other_than_diagonal_is_refused(self):
        model = tiny_model()
        model.config.model.posterior = 'full'
        with self.assertRaisesRegex(ValueError, "model.posterior='full'"):
            traversals.latent_traversals(model, np.zeros((1, 8, 8, 1)), '/nonexistent/x.png')


class PicturesTest(absltest.TestCase):
    """`pictures.write_pictures` draws the traversals of every model that can draw them."""

    def test_a_one_layer_model_gets_the_traversals_among_its_pictures(self):
        model = tiny_model()
        images = np.random.default_rng(0).uniform(size=(20, 8, 8, 1)).astype(np.float32)
        out = Path(self.create_tempdir().full_path)
        drawn = pictures.write_pictures(out, model, jax.random.key(0), images, np.zeros(20, int))
        self.assertIn('latent_traversals', drawn)
        # The picture is latent_traversals of the reconstructions' inputs (the first 16).
        direct = traversals.latent_traversals(
            model, images[:16], out / 'direct.png', max_rows=pictures.NUM_TRAVERSAL_ROWS
        )
        np.testing.assert_array_equal(drawn['latent_traversals'], direct)
        saved = np.asarray(Image.open(out / 'latent_traversals.png'))
        np.testing.assert_array_equal(saved, direct)

    def test_models_that_cannot_draw_them_are_skipped_with_the_reason(self):
        images = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
        config = test_config.get_config()
        module = two_layer.TwoLayerVAE(
            latent_dims=(2, 2), encoder_dims=((8,), (8,)), decoder_dims=((8,), (8,))
        )
        parts = build.build(config, model=module)
        variables = models.init_variables(parts.model, jax.random.key(0), parts.data_shape, False)
        no_one_layer = trained.TrainedModel(parts, variables, 0)
        full = tiny_model()
        full.config.model.posterior = 'full'
        for model, reason in (
            (no_one_layer, 'TwoLayerVAE has no one-layer capability'),
            (full, "model.posterior='full': the KL per dimension needs a diagonal Gaussian"),
        ):
            out = Path(self.create_tempdir().full_path)
            with self.assertLogs(level='INFO') as logs:
                drawn = pictures.write_pictures(
                    out, model, jax.random.key(0), images, np.zeros(4, int)
                )
            self.assertNotIn('latent_traversals', drawn)
            self.assertIn('reconstructions', drawn)  # the others are still drawn
            self.assertIn(f'picture latent_traversals skipped: {reason}', '\n'.join(logs.output))
            self.assertFalse((out / 'latent_traversals.png').exists())


if __name__ == '__main__':
    absltest.main()
