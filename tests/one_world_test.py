"""One world: every model goes through one protocol, one evaluation and one set of pictures.

- The built-in VAE is evaluated through its protocol binding (`steps.make_model_fn`) exactly as
  the earlier built-in path did: the per-example NLL and ELBO equal an independent computation
  from the model's own distributions on the same keys (the key layout of that path, written out
  here), for every likelihood and for the full-covariance posterior.
- A protocol model defined here gets every picture when it has `decode_mean` and `sample_prior`,
  and the others with a logged reason when it does not.
- eval.json from a trained run and from `python -m vae_jax.evaluate` on it (same key, same
  settings) have the same keys and values.
"""

import io
import json
import math
from pathlib import Path
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import (
    build,
    distributions,
    evaluate,
    evaluation,
    losses,
    optim,
    pictures,
    protocol,
    trained,
    trainer,
)

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _normal_log_prob(z, loc, scale):
    return jnp.sum(-0.5 * jnp.square((z - loc) / scale) - jnp.log(scale) - _HALF_LOG_2PI, -1)


def _reference_metrics(model, variables, key, index, x, *, k_list, nll_k):
    """The earlier built-in path, written out: ELBO (analytic KL) and the k-sample NLL.

    Example `index` uses fold_in(key, index) -> (binarisation key, metrics key); the metrics key
    splits into (elbo, nll, *iwae); NLL sample i is q.sample(fold_in(nll_key, i)).
    """
    _, metrics_key = jax.random.split(jax.random.fold_in(key, index))
    elbo_key, nll_key, *_ = jax.random.split(metrics_key, 2 + len(k_list))
    q = model.apply(variables, x, method='posterior_distribution')

    def decode(z):
        return model.apply(variables, z, method='likelihood_distribution')

    prior = distributions.standard_normal_prior(q.event_shape[0])
    z = q.sample(seed=elbo_key, sample_shape=1)
    recon = -decode(z).log_prob(x[None])[0]
    kl = losses.kl_divergence(q, prior)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(nll_key, jnp.arange(nll_k))
    zs = jax.vmap(lambda k: q.sample(seed=k))(keys)
    log_w = (
        decode(zs).log_prob(jnp.broadcast_to(x, (nll_k, *x.shape)))
        + jax.vmap(prior.log_prob)(zs)
        - jax.vmap(q.log_prob)(zs)
    )
    log_px = jax.nn.logsumexp(log_w) - math.log(nll_k)
    return {'elbo': -(recon + kl), 'log_px': log_px}


class BuiltInThroughTheProtocolTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('bernoulli', 'bernoulli', 'diagonal'),
        ('gaussian', 'gaussian', 'diagonal'),
        ('continuous_bernoulli', 'continuous_bernoulli', 'diagonal'),
        ('full_covariance', 'bernoulli', 'full'),
    )
    def test_per_example_nll_and_elbo_equal_the_built_in_path(self, likelihood, posterior):
        config = test_config.get_config()
        config.model.likelihood = likelihood
        config.model.posterior = posterior
        config.model.latent_dim = 3
        if likelihood != 'bernoulli':
            config.input.binarize = 'none'
        parts = build.build(config)
        self.assertTrue(parts.static.distributions)
        variables = build.create_train_state(
            parts,
            jax.random.key(1),
            optim.create_optimizer(config.optim, steps_per_epoch=1, num_train_steps=1),
        )
        variables = {'params': variables.params}
        rng = np.random.default_rng(0)
        images = rng.uniform(size=(5, *parts.data_shape)).astype(np.float32)
        if likelihood == 'bernoulli':
            images = (images > 0.5).astype(np.float32)
        key, k_list, nll_k = jax.random.key(7), (1, 4), 40
        got = evaluation.evaluate_dataset(
            key,
            images,
            None,
            variables=variables,
            model_fn=parts.model_fn,
            k_list=k_list,
            nll_k=nll_k,
            chunk_size=16,
            batch_size=2,
            return_per_example=True,
        )['per_example']
        for n, x in enumerate(images):
            want = _reference_metrics(
                parts.model, variables, key, n, jnp.asarray(x), k_list=k_list, nll_k=nll_k
            )
            # float32: the chunked log-sum-exp adds in another order than one logsumexp.
            np.testing.assert_allclose(got['log_px'][n], want['log_px'], rtol=2e-6, atol=2e-5)
            np.testing.assert_allclose(got['elbo'][n], want['elbo'], rtol=2e-6, atol=2e-5)


class ChainVAE(nn.Module):
    """Two Gaussian latents z1 -> z2 (not the one-layer capability), Bernoulli on flat x."""

    with_sampling: bool = True

    def setup(self):
        self.enc1 = nn.Dense(2 * 2)
        self.enc2 = nn.Dense(2 * 2)
        self.dec = nn.Dense(64)

    @property
    def latent_shapes(self):
        return {'z1': (2,), 'z2': (2,)}

    def _q(self, x):
        h1 = self.enc1(x.reshape(-1))
        return h1[:2], jax.nn.softplus(h1[2:]) + 1e-3

    def _q2(self, z1):
        h2 = self.enc2(z1)
        return h2[..., :2], jax.nn.softplus(h2[..., 2:]) + 1e-3

    def sample_posterior(self, x, noise, y=None, train=False):
        loc1, scale1 = self._q(x)
        z1 = loc1[None] + scale1[None] * noise['z1']
        loc2, scale2 = self._q2(z1)
        return {'z1': z1, 'z2': loc2 + scale2 * noise['z2']}

    def log_posterior(self, x, z, y=None, train=False):
        loc1, scale1 = self._q(x)
        loc2, scale2 = self._q2(z['z1'])
        return _normal_log_prob(z['z1'], loc1[None], scale1[None]) + _normal_log_prob(
            z['z2'], loc2, scale2
        )

    def _logits(self, z):
        return self.dec(jnp.concatenate([z['z1'], z['z2']], -1))

    def log_likelihood(self, x, z, y=None, train=False):
        flat, logits = x.reshape(-1), self._logits(z)
        return jnp.sum(flat[None] * logits - jax.nn.softplus(logits), -1)

    def log_prior(self, z, y=None, train=False):
        return _normal_log_prob(z['z1'], 0.0, 1.0) + _normal_log_prob(z['z2'], 0.0, 1.0)

    def sample_prior(self, noise, y=None, train=False):
        return noise

    def decode_mean(self, z, y=None, train=False):
        return jax.nn.sigmoid(self._logits(z))


class WithoutSampling(ChainVAE):
    sample_prior = None
    decode_mean = None


class PicturesForEveryModelTest(parameterized.TestCase):
    def _model(self, module):
        config = test_config.get_config()
        parts = build.build(config, model=module)
        state = build.create_train_state(
            parts,
            jax.random.key(0),
            optim.create_optimizer(config.optim, steps_per_epoch=1, num_train_steps=1),
        )
        return trained.TrainedModel(parts, {'params': state.params}, 0)

    def test_a_model_with_decode_mean_and_sample_prior_gets_every_picture(self):
        model = self._model(ChainVAE())
        self.assertTrue(model.capabilities.decode_mean and model.capabilities.sample_prior)
        images = np.random.default_rng(0).uniform(size=(20, 8, 8, 1)).astype(np.float32)
        out = Path(self.create_tempdir().full_path)
        drawn = pictures.write_pictures(
            out,
            model,
            jax.random.key(0),
            images,
            np.arange(20) % 10,
            posterior_means=np.random.default_rng(1).normal(size=(20, 4)),
        )
        self.assertContainsSubset({'reconstructions', 'samples', 'latent_scatter'}, set(drawn))
        for name in ('reconstructions', 'samples', 'latent_scatter'):
            self.assertTrue((out / f'{name}.png').is_file(), name)
        # The reconstructions are the model's own decode_mean at its zero-noise posterior.
        recon = model.reconstruct(images[:3])
        want = jax.nn.sigmoid(
            model.parts.model.apply(
                model.variables,
                model.parts.model.apply(
                    model.variables,
                    jnp.asarray(images[0]),
                    {'z1': jnp.zeros((1, 2)), 'z2': jnp.zeros((1, 2))},
                    method='sample_posterior',
                ),
                method='_logits',
            )
        )
        np.testing.assert_allclose(recon[0].reshape(-1), want[0], rtol=1e-6)

    def test_a_model_without_them_gets_the_others_and_the_reason(self):
        model = self._model(WithoutSampling())
        self.assertFalse(model.capabilities.decode_mean or model.capabilities.sample_prior)
        images = np.random.default_rng(0).uniform(size=(20, 8, 8, 1)).astype(np.float32)
        out = Path(self.create_tempdir().full_path)
        with mock.patch('sys.stdout', new_callable=io.StringIO) as out_text:
            drawn = pictures.write_pictures(
                out,
                model,
                jax.random.key(0),
                images,
                np.arange(20) % 10,
                posterior_means=np.random.default_rng(1).normal(size=(20, 4)),
            )
        self.assertEqual(set(drawn), {'latent_scatter'})
        text = out_text.getvalue()
        for name in ('reconstructions', 'samples', 'manifold'):
            self.assertRegex(
                text, rf'{name}\.png skipped: WithoutSampling has no decode_mean', name
            )


class OneEvalRecordTest(absltest.TestCase):
    def test_trainer_and_evaluate_write_the_same_keys_and_values(self):
        config = test_config.get_config()
        workdir = Path(self.create_tempdir().full_path) / 'run'
        trainer.train_and_evaluate(config, workdir)
        from_trainer = json.loads((workdir / 'eval.json').read_text())
        again = evaluate.evaluate(
            workdir,
            k_samples=0,
            batch_size=config.input.eval_batch_size,
            output='again.json',
            pictures=False,
            progress=False,
        )
        from_file = json.loads((workdir / 'again.json').read_text())
        self.assertEqual(again.pop('results_file'), str(workdir / 'again.json'))  # not written
        self.assertEqual(from_file, json.loads(json.dumps(again)))
        self.assertEqual(from_trainer['evaluated_by'], 'vae_jax.train')
        self.assertEqual(again['evaluated_by'], 'vae_jax.evaluate')
        training = {'train_steps_per_sec', 'wall_time_sec'}  # the trainer's own, kept by evaluate
        self.assertEqual(set(again) | training, set(from_trainer))
        timing = {'eval_time_sec', 'evaluated_by'} | training
        for name in set(from_trainer) - timing:
            self.assertEqual(again[name], from_trainer[name], name)


class CapabilitiesTest(absltest.TestCase):
    def test_capabilities_of_the_built_in_and_a_protocol_model(self):
        config = test_config.get_config()
        builtin = build.build(config).model
        caps = protocol.capabilities(builtin)
        self.assertTrue(caps.distributions and caps.standard_normal_prior and caps.decode_mean)
        self.assertFalse(caps.sample_prior)  # drawn from its prior_distribution instead
        caps = protocol.capabilities(ChainVAE())
        self.assertFalse(caps.distributions)
        self.assertTrue(caps.sample_prior and caps.decode_mean)
        self.assertEqual(protocol.capabilities(WithoutSampling()), protocol.Capabilities())


if __name__ == '__main__':
    absltest.main()
