"""Tests for vae_jax.traversals: the codes, the KL ordering, and the picture of a tiny model."""

import distrax
import jax
import numpy as np
import optax
from absl.testing import absltest
from PIL import Image

from configs import default as default_config
from vae_jax import plots, trained, traversals


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


if __name__ == '__main__':
    absltest.main()
