"""Tests for vae_jax.disentangle_vaes: DIP-VAE-I/-II and AnnealedVAE as registered objectives.

The toy model is linear-Gaussian with one stochastic layer: q(z|x) = N(A x + a, diag(exp(s))^2),
p(z) = N(0, I), p(x|z) = N(W z + b, 0.5^2). The batch terms are checked against the ELBO's
per-example terms on the same keys and against the regulariser and capacity written here in
numpy; the registered objectives then train a few steps on a tiny dsprites32 subset.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import (
    config_validation,
    disentangle_objectives,
    disentangle_vaes,
    distributions,
    input_transform,
    losses,
    objectives,
    steps,
    trainer,
    two_layer,
)

_D, _X_DIM, _B = 3, 4, 8
_R = np.random.default_rng(0)
_PARAMS = {
    'A': jnp.asarray(_R.normal(size=(_D, _X_DIM)), jnp.float32),
    'a': jnp.asarray(_R.normal(size=_D) * 0.5, jnp.float32),
    's': jnp.asarray(_R.normal(size=_D) * 0.3, jnp.float32),
    'W': jnp.asarray(_R.normal(size=(_X_DIM, _D)), jnp.float32),
    'b': jnp.asarray(_R.normal(size=_X_DIM), jnp.float32),
}
_XS = jnp.asarray(_R.normal(size=(_B, _X_DIM)), jnp.float32)
_KEYS = jax.random.split(jax.random.key(5), _B)


def _bind(params=_PARAMS, full=False):
    def bind(x, y):
        def encode(x):
            loc = params['A'] @ x + params['a']
            if full:
                return distrax.MultivariateNormalTri(loc, jnp.diag(jnp.exp(params['s'])))
            return distrax.MultivariateNormalDiag(loc, jnp.exp(params['s']))

        def decode(z):
            loc = z @ params['W'].T + params['b'][None]
            return distributions.make_likelihood('gaussian', loc, event_ndims=1, sigma=0.5)

        return losses.one_layer_model(x, encode, decode)

    return bind


def _elbo_terms():
    """Per-example recon and KL of the same keys, example by example."""
    bind = _bind()
    rows = [losses.model_elbo(k, bind(x, None)) for k, x in zip(_KEYS, _XS, strict=True)]
    return np.array([float(r['recon']) for r in rows]), np.array([float(r['kl']) for r in rows])


def _numpy_dip(mean, var, lambda_od, lambda_d):
    """The DIP regulariser by hand: C = biased Cov of the means (+ diag of the mean variance)."""
    mean = np.asarray(mean, np.float64)
    cov = np.cov(mean, rowvar=False, bias=True)
    if var is not None:
        cov = cov + np.diag(np.mean(var, axis=0))
    off = cov - np.diag(np.diag(cov))
    return lambda_od * np.sum(off**2) + lambda_d * np.sum((np.diag(cov) - 1) ** 2)


class DipVaeTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('i', 'dip_vae_i', 10.0, 10.0, 0.5), ('ii', 'dip_vae_ii', 10.0, 1.0, 2.0)
    )
    def test_batch_terms_are_the_elbo_plus_the_regulariser(self, name, lambda_od, factor, beta):
        fn = objectives.get(name).fn
        jitted = jax.jit(
            lambda keys, beta: fn(
                keys, _bind(), _XS, None, beta=beta, dip_lambda_od=lambda_od,
                lambda_d_factor=factor,
            )
        )  # fmt: skip
        terms = jitted(_KEYS, beta)
        for value in terms.values():
            self.assertEqual(value.shape, (_B,))
        recon, kl = _elbo_terms()
        np.testing.assert_allclose(terms['recon'], recon, rtol=1e-5)
        np.testing.assert_allclose(terms['kl'], kl, rtol=1e-5)
        mean = np.asarray(_XS @ _PARAMS['A'].T + _PARAMS['a'][None])
        var = np.broadcast_to(np.exp(2 * np.asarray(_PARAMS['s'])), mean.shape)
        expected = _numpy_dip(
            mean, var if name == 'dip_vae_ii' else None, lambda_od, factor * lambda_od
        )
        self.assertGreater(expected, 1.0)  # a covariance far from I: the test can fail
        np.testing.assert_allclose(terms['dip'], np.full(_B, expected), rtol=1e-4)
        np.testing.assert_allclose(
            np.mean(terms['loss']), np.mean(recon) + beta * np.mean(kl) + expected, rtol=1e-4
        )
        # The pure function agrees (the module's defaults: disentanglement_lib's factors).
        pure = disentangle_objectives.dip_regularizer(
            jnp.asarray(mean), jnp.asarray(np.sqrt(var)), dip_type=name[-2:].lstrip('_'),
            lambda_od=lambda_od,
        )  # fmt: skip
        np.testing.assert_allclose(pure, expected, rtol=1e-4)

    def test_regulariser_gradient_reaches_the_encoder_and_is_zero_at_identity(self):
        def penalty(params):
            return jnp.mean(
                disentangle_vaes.model_dip_vae_i(_KEYS, _bind(params), _XS, None)['dip']
            )

        grads = jax.grad(penalty)(_PARAMS)
        self.assertGreater(float(jnp.abs(grads['A']).sum()), 0.0)
        self.assertEqual(float(jnp.abs(grads['W']).sum()), 0.0)  # the decoder has no part in it
        # Means whitened over the batch (Cov = I exactly): the regulariser is zero.
        centred = np.asarray(_XS) - np.mean(np.asarray(_XS), 0)
        u, _, _ = np.linalg.svd(centred, full_matrices=False)
        white = jnp.asarray(u[:, :_D] * np.sqrt(_B), jnp.float32)
        self.assertLess(float(disentangle_objectives.dip_regularizer(white)), 1e-3)

    def test_posteriors_the_objective_cannot_use_raise(self):
        with self.assertRaisesRegex(ValueError, "dip_vae_ii.*model.posterior='diagonal'"):
            disentangle_vaes.model_dip_vae_ii(_KEYS, _bind(full=True), _XS, None)
        # DIP-VAE-I needs only the means: a full-covariance posterior is fine.
        out = disentangle_vaes.model_dip_vae_i(_KEYS, _bind(full=True), _XS, None)
        self.assertTrue(np.all(np.isfinite(out['loss'])))

        def bind_without_one_layer(x, y):
            model = _bind()(x, y)
            return model._replace(one_layer=None)

        with self.assertRaisesRegex(ValueError, 'one-layer capability'):
            disentangle_vaes.model_dip_vae_i(_KEYS, bind_without_one_layer, _XS, None)


class AnnealedVaeTest(parameterized.TestCase):
    def test_capacity_schedule_and_loss(self):
        traces = []

        def fn(keys, step):
            traces.append(None)  # runs only while tracing
            return disentangle_vaes.model_annealed_vae(
                keys, _bind(), _XS, None, step=step, annealed_gamma=7.0, annealed_c_max=3.0,
                annealed_capacity_steps=100,
            )  # fmt: skip

        jitted = jax.jit(fn)
        recon, kl = _elbo_terms()
        for step, c in ((0, 0.0), (25, 0.75), (100, 3.0), (400, 3.0)):
            terms = jitted(_KEYS, jnp.asarray(step, jnp.int32))
            np.testing.assert_allclose(terms['capacity'], np.full(_B, c), rtol=1e-6)
            np.testing.assert_allclose(terms['kl'], kl, rtol=1e-5)
            # |mean KL - C| of the batch (disentanglement_lib), not the mean of |KL_i - C|.
            expected = np.mean(recon) + 7.0 * abs(np.mean(kl) - c)
            np.testing.assert_allclose(np.mean(terms['loss']), expected, rtol=1e-5)
        self.assertLen(traces, 1)  # the step is traced: one compile for all steps
        self.assertNotAlmostEqual(
            abs(np.mean(kl) - 0.75), np.mean(np.abs(kl - 0.75)), places=3
        )  # the two readings differ here, so the check above can tell them apart

    def test_zero_capacity_steps_is_c_max_from_the_start(self):
        out = disentangle_vaes.model_annealed_vae(
            _KEYS, _bind(), _XS, None, step=0, annealed_capacity_steps=0, annealed_c_max=5.0
        )
        np.testing.assert_allclose(out['capacity'], np.full(_B, 5.0))


def _dsprites_config(objective, **values):
    config = test_config.get_config()
    config.objective = objective
    config.input.dataset = 'dsprites32'
    config.input.data_dir = '/nonexistent'  # no TFDS copy: the renderer
    config.input.num_train_examples = 128
    config.input.num_test_examples = 64
    config.input.eval_batch_size = 64
    config.model.latent_dim = 4
    config.model.likelihood = 'bernoulli'
    for key, value in values.items():
        config[key] = value
    return config


class RegistrationTest(parameterized.TestCase):
    def test_step_config_passes_the_options_and_the_step(self):
        static = steps.StepConfig.from_config(
            _dsprites_config('annealed_vae', annealed_gamma=5.0), (32, 32, 1)
        )
        objective, kwargs = static.objective_fn(beta=2.0, step=7)
        self.assertIs(objective.fn, disentangle_vaes.model_annealed_vae)
        self.assertEqual(
            kwargs,
            {
                'step': 7,
                'annealed_gamma': 5.0,
                'annealed_c_max': 25.0,
                'annealed_capacity_steps': 100_000,
            },
        )
        static = steps.StepConfig.from_config(_dsprites_config('dip_vae_ii'), (32, 32, 1))
        _, kwargs = static.objective_fn(beta=2.0, step=7)
        self.assertEqual(kwargs, {'beta': 2.0, 'dip_lambda_od': 10.0, 'lambda_d_factor': 1.0})

    def test_a_model_without_the_one_layer_capability_is_refused_at_start(self):
        config = _dsprites_config('dip_vae_i')
        model = two_layer.TwoLayerVAE()
        with self.assertRaisesRegex(
            ValueError, r"objective='dip_vae_i' needs the model capability 'distributions'.*"
            r'TwoLayerVAE lacks; allowed with this model: elbo, iwae'
        ):  # fmt: skip
            steps.StepConfig.from_config(config, (32, 32, 1), model)
        # AnnealedVAE needs only the KL: any model.
        config.objective = 'annealed_vae'
        steps.StepConfig.from_config(config, (32, 32, 1), model)

    @parameterized.named_parameters(
        ('full_posterior_ii', 'dip_vae_ii', {'model.posterior': 'full'}, "posterior='full'"),
        ('batch_of_one', 'dip_vae_i', {'input.batch_size': 1}, 'batch_size=1'),
        ('option_of_another', 'elbo', {'annealed_gamma': 3.0}, 'annealed_gamma=3.0 applies only'),
        ('factor_of_ii_under_i', 'dip_vae_i', {'dip_ii_lambda_d_factor': 2.0}, 'applies only'),
        ('negative_weight', 'dip_vae_i', {'dip_lambda_od': -1.0}, 'dip_lambda_od=-1.0 is invalid'),
    )
    def test_config_errors(self, objective, values, pattern):
        config = _dsprites_config(objective)
        for key, value in values.items():
            *parents, leaf = key.split('.')
            node = config
            for parent in parents:
                node = node[parent]
            node[leaf] = value
        with self.assertRaisesRegex(ValueError, pattern):
            config_validation.validate(config)


class TrainOnDspritesTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('dip_vae_i', 'dip_vae_i'), ('dip_vae_ii', 'dip_vae_ii'), ('annealed_vae', 'annealed_vae')
    )
    def test_a_few_steps_give_finite_metrics(self, objective):
        extra = {'annealed_capacity_steps': 6} if objective == 'annealed_vae' else {}
        config = _dsprites_config(objective, **extra)
        run = trainer.Run(config)
        state = run.create_train_state()
        before = jax.device_get(state.params)
        train_step = jax.jit(lambda s, x, y, beta: steps.train_step(
            s, x, y, run.loop_key, beta, static=run.static))  # fmt: skip
        images = input_transform.to_model_input(run.train_data['image'], run.input_spec)
        labels = jnp.asarray(run.train_data['label'], jnp.int32)
        beta = jnp.asarray(1.0, jnp.float32)
        for i in range(3):
            rows = slice(i * 16, (i + 1) * 16)
            state, metrics = train_step(state, images[rows], labels[rows], beta)
            for k, v in jax.device_get(metrics).items():
                self.assertTrue(np.isfinite(v), f'{objective} step {i}: {k}={v}')
        if objective == 'annealed_vae':  # C(2) = 25 * 2 / 6 on the last step
            np.testing.assert_allclose(metrics['capacity'], 25.0 * 2 / 6, rtol=1e-6)
        else:
            self.assertGreater(float(metrics['dip']), 0.0)
        moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, state.params)
        self.assertTrue(all(jax.tree.leaves(moved)))


if __name__ == '__main__':
    absltest.main()
