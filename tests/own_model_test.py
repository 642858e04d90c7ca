"""Your own model: a Flax module defined here (not in the library) trains through the trainer.

`TinyVAE` follows the model protocol (`vae_jax.models.LatentVariableModel`). It trains by the
Python API (`train_and_evaluate(config, workdir, model=TinyVAE(...))`) and by import path in the
config (`model.module='own_model_test:TinyVAE'`, as `--config.model.module=...` does on the
command line), and both give the same run. Unlike `examples/my_models.py`'s model it has no
`sample_and_log_posterior`, so the objectives' path without that optional member is trained
here. The command line end to end (train, resume, evaluate, load) is tests/python_model_test.py.
"""

import functools
import json
import math
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl.testing import absltest

from configs import test as test_config
from vae_jax import config_validation, input_transform, models, steps, trainer

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _normal_log_prob(z, loc, scale):
    return jnp.sum(-0.5 * jnp.square((z - loc) / scale) - jnp.log(scale) - _HALF_LOG_2PI, -1)


class TinyVAE(nn.Module):
    """One Gaussian layer, a Bernoulli decoder over the flattened image, a learned prior scale."""

    latent_dim: int = 2
    hidden: int = 16

    def setup(self):
        self.encoder_hidden = nn.Dense(self.hidden)
        self.encoder_out = nn.Dense(2 * self.latent_dim)
        self.decoder_hidden = nn.Dense(self.hidden)
        self.decoder_out = LazyDense()
        self.prior_log_scale = self.param('prior_log_scale', nn.initializers.zeros, ())

    @property
    def latent_shapes(self):
        return {'z': (self.latent_dim,)}

    def _q(self, x):
        h = self.encoder_out(jnp.tanh(self.encoder_hidden(x.reshape(-1))))
        return h[: self.latent_dim], jax.nn.softplus(h[self.latent_dim :]) + 1e-4

    def sample_posterior(self, x, noise, y=None, train=False):
        loc, scale = self._q(x)
        return {'z': loc[None] + scale[None] * noise['z']}

    def log_posterior(self, x, z, y=None, train=False):
        loc, scale = self._q(x)
        return _normal_log_prob(z['z'], loc[None], scale[None])

    def log_likelihood(self, x, z, y=None, train=False):
        flat = x.reshape(-1)
        logits = self.decoder_out(jnp.tanh(self.decoder_hidden(z['z'])), flat.shape[0])
        return jnp.sum(flat[None] * logits - jax.nn.softplus(logits), -1)  # Bernoulli

    def log_prior(self, z, y=None, train=False):
        scale = jnp.exp(self.prior_log_scale)
        return _normal_log_prob(z['z'], 0.0, jnp.full(z['z'].shape, scale))


class LazyDense(nn.Module):
    """A Dense layer whose width (here the data size) is given at the call."""

    @nn.compact
    def __call__(self, h, features):
        return nn.Dense(features)(h)


def _config():
    config = test_config.get_config()
    config.num_train_steps = 6
    config.input.binarize = 'dynamic'
    return config


class OwnModelTest(absltest.TestCase):
    def test_trains_by_python_api_and_by_import_path_with_the_same_result(self):
        by_object = Path(self.create_tempdir().full_path)
        result = trainer.train_and_evaluate(_config(), by_object, model=TinyVAE(latent_dim=2))
        self.assertEqual(result['step'], 6)
        for name in ('elbo', 'recon', 'kl', 'iwae_k1', 'iwae_k4'):
            self.assertTrue(np.isfinite(result[name]), name)
        self.assertGreaterEqual(result['iwae_k4'], result['elbo'] - 1.0)
        self.assertIn('active_units/z', result)
        self.assertEqual(result['active_units'], result['active_units/z'])
        rows = [json.loads(line) for line in (by_object / 'metrics.jsonl').read_text().splitlines()]
        self.assertTrue(any('train/loss' in row for row in rows))

        config = _config()
        config.model.module = 'own_model_test:TinyVAE'
        config.model.module_kwargs = ml_collections.ConfigDict(dict(latent_dim=2))
        by_path = Path(self.create_tempdir().full_path)
        again = trainer.train_and_evaluate(config, by_path)
        for name in ('elbo', 'iwae_k1', 'iwae_k4', 'active_units'):
            np.testing.assert_allclose(again[name], result[name], rtol=1e-5, err_msg=name)

    def test_the_prior_parameter_trains(self):
        run = trainer.Run(_config(), model=TinyVAE())
        state = run.create_train_state()
        self.assertIn('prior_log_scale', state.params)
        images = input_transform.to_model_input(run.train_data['image'][:16], run.input_spec)
        labels = jnp.asarray(run.train_data['label'][:16])
        train_step = jax.jit(functools.partial(steps.train_step, static=run.static))
        new_state, metrics = train_step(state, images, labels, run.loop_key, jnp.float32(1.0))
        self.assertEqual(int(new_state.step), 1)
        self.assertTrue(np.isfinite(metrics['loss']))
        self.assertNotEqual(float(new_state.params['prior_log_scale']), 0.0)


class ProtocolErrorsTest(absltest.TestCase):
    def test_a_module_without_the_protocol_is_named_with_what_it_lacks(self):
        with self.assertRaisesRegex(ValueError, r'missing: sample_posterior, log_posterior'):
            trainer.Run(_config(), model=nn.Dense(3))

    def test_bad_import_paths_name_the_key(self):
        for path, pattern in (
            ('own_model_test.TinyVAE', "model.module='own_model_test.TinyVAE' is invalid; allowed"),
            ('no_such_package.models:VAE', "cannot import 'no_such_package.models'"),
            ('own_model_test:NoSuchVAE', "has no 'NoSuchVAE'"),
        ):
            config = _config()
            config.model.module = path
            with self.assertRaisesRegex(ValueError, pattern):
                config_validation.validate(config)
                models.create_model(config.model, (8, 8, 1), config.objective)

    def test_unknown_module_kwargs_name_the_module(self):
        config = _config()
        config.model.module = 'own_model_test:TinyVAE'
        config.model.module_kwargs = ml_collections.ConfigDict(dict(width=3))
        with self.assertRaisesRegex(ValueError, r"module_kwargs=\{'width': 3\}"):
            models.create_model(config.model, (8, 8, 1), config.objective)

    def test_module_excludes_the_layer_spec_only_options(self):
        for key, value, pattern in (
            ('objective', 'autoencoder', "objective='autoencoder' needs the layer-spec model"),
            ('free_bits', 0.5, 'free_bits=0.5 applies only when the layer-spec model'),
        ):
            config = _config()
            config.model.module = 'own_model_test:TinyVAE'
            setattr(config, key, value)
            with self.assertRaisesRegex(ValueError, pattern):
                config_validation.validate(config)
        config = _config()
        config.model.module = 'own_model_test:TinyVAE'
        config.model.prior.name = 'vamp'
        with self.assertRaisesRegex(ValueError, "model.prior.name='vamp' applies to the layer"):
            config_validation.validate(config)

    def test_module_kwargs_without_a_module_raise(self):
        config = _config()
        config.model.module_kwargs = ml_collections.ConfigDict(dict(latent_dim=2))
        with self.assertRaisesRegex(
            ValueError, 'model.module_kwargs=.*model.module, which is None'
        ):
            config_validation.validate(config)


if __name__ == '__main__':
    absltest.main()
