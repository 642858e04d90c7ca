"""Tests for vae_jax.flows.

The log-density of an IAF sample is checked against the change-of-variables formula with the
flow's Jacobian from `jax.jacfwd` (an independent computation of the log-determinant).
"""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import one_pass_testing
from absl.testing import absltest, parameterized

from vae_jax import flows, models

_D, _H = 4, 3
_CONTEXT = jnp.asarray([0.5, -1.0, 0.25])
_LOC = jnp.asarray([0.3, -0.2, 1.0, 0.0])
_SCALE = jnp.asarray([0.5, 1.5, 0.8, 1.0])


def _random_params(module, seed=0, scale=0.7):
    """Initialised params with every leaf redrawn (the zero-initialised outputs included)."""
    params = module.init(jax.random.key(seed), jnp.zeros((1, _D)), _CONTEXT)['params']
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    new = [scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(tree, new)


def _single(module, params):
    """z [D] -> z' [D] (one example, for jacfwd)."""
    return lambda z: module.apply({'params': params}, z[None], _CONTEXT)[0][0]


class MaskTest(parameterized.TestCase):
    @parameterized.named_parameters(('forward', False), ('reverse', True))
    def test_step_jacobian_is_triangular_with_sigma_on_the_diagonal(self, reverse):
        step = flows.IAFStep(hidden_dims=(8, 8), reverse=reverse)
        params = _random_params(step)
        z = jnp.asarray([0.1, -0.7, 1.2, 0.4])
        jac = jax.jacfwd(_single(step, params))(z)
        upper = np.triu(np.asarray(jac), 1)
        lower = np.tril(np.asarray(jac), -1)
        zero_part, dense_part = (lower, upper) if reverse else (upper, lower)
        np.testing.assert_array_equal(zero_part, 0.0)
        self.assertGreater(np.abs(dense_part).min() + np.abs(dense_part).max(), 1e-3)
        _, log_det = step.apply({'params': params}, z[None], _CONTEXT)
        np.testing.assert_allclose(np.sum(np.log(np.diag(jac))), log_det[0], rtol=1e-5)

    def test_mask_degrees(self):
        mask = flows.made_mask((1, 2, 3), (1, 2, 3), strict=True)
        np.testing.assert_array_equal(mask, np.triu(np.ones((3, 3)), 1))

    def test_alternating_steps_mix_every_dimension(self):
        flow = flows.IAF(num_steps=2, hidden_dims=(8,))
        params = _random_params(flow)
        jac = np.asarray(jax.jacfwd(_single(flow, params))(jnp.ones(_D) * 0.3))
        self.assertGreater(np.abs(np.triu(jac, 1)).max(), 1e-4)
        self.assertGreater(np.abs(np.tril(jac, -1)).max(), 1e-4)


class LogDensityTest(parameterized.TestCase):
    @parameterized.named_parameters(('one_step', 1), ('three_steps', 3))
    def test_log_q_is_base_density_minus_jacobian_log_det(self, num_steps):
        flow = flows.IAF(num_steps=num_steps, hidden_dims=(8,), forget_bias=0.5)
        params = _random_params(flow, seed=num_steps)
        bound = lambda z0, h: flow.apply({'params': params}, z0, h)  # noqa: E731
        key = jax.random.key(7)
        z, log_q = jax.jit(flows.sample_and_log_prob, static_argnums=(4, 5))(
            key, _LOC, _SCALE, _CONTEXT, bound, 5
        )
        self.assertEqual(z.shape, (5, _D))
        self.assertEqual(log_q.shape, (5,))
        eps = jax.random.normal(key, (5, _D))  # the same draw, recomputed independently
        z0 = _LOC[None] + _SCALE[None] * eps
        base = distrax.MultivariateNormalDiag(_LOC, _SCALE)
        jacs = jax.vmap(jax.jacfwd(_single(flow, params)))(z0)
        _, log_abs_det = np.linalg.slogdet(np.asarray(jacs, np.float64))
        expected = np.asarray(jax.vmap(base.log_prob)(z0)) - log_abs_det
        np.testing.assert_allclose(log_q, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(z, jax.vmap(_single(flow, params))(z0), rtol=1e-5, atol=1e-6)


class ReductionTest(absltest.TestCase):
    def test_no_steps_is_the_gaussian_posterior(self):
        flow = flows.IAF(num_steps=0)
        params = flow.init(jax.random.key(0), jnp.zeros((1, _D)), _CONTEXT)
        bound = lambda z0, h: flow.apply(params, z0, h)  # noqa: E731
        z, log_q = flows.sample_and_log_prob(jax.random.key(1), _LOC, _SCALE, _CONTEXT, bound, 6)
        q = distrax.MultivariateNormalDiag(_LOC, _SCALE)
        np.testing.assert_allclose(log_q, jax.vmap(q.log_prob)(z), rtol=1e-6)

    def test_zero_initialised_steps_keep_the_posterior_gaussian(self):
        # m = 0 and s = 0 at init: each step is z' = c z, c = sigmoid(forget_bias), so
        # q(z_T) = N(c^T loc, (c^T scale)^2); with a large bias c = 1 in float32.
        for forget_bias, num_steps in ((1.0, 3), (30.0, 2)):
            flow = flows.IAF(num_steps=num_steps, hidden_dims=(8,), forget_bias=forget_bias)
            params = flow.init(jax.random.key(0), jnp.zeros((1, _D)), _CONTEXT)
            bound = lambda z0, h, f=flow, p=params: f.apply(p, z0, h)  # noqa: E731
            z, log_q = flows.sample_and_log_prob(
                jax.random.key(2), _LOC, _SCALE, _CONTEXT, bound, 6
            )
            c = (1 / (1 + np.exp(-forget_bias))) ** num_steps
            q = distrax.MultivariateNormalDiag(c * _LOC, c * _SCALE)
            np.testing.assert_allclose(log_q, jax.vmap(q.log_prob)(z), rtol=1e-5, atol=1e-5)
            if forget_bias == 30.0:
                base = distrax.MultivariateNormalDiag(_LOC, _SCALE)
                np.testing.assert_allclose(log_q, jax.vmap(base.log_prob)(z), rtol=1e-6)


class ApiTest(absltest.TestCase):
    def test_gradients_are_finite_and_reach_every_parameter(self):
        flow = flows.IAF(num_steps=2, hidden_dims=(8,))
        params = flow.init(jax.random.key(0), jnp.zeros((1, _D)), _CONTEXT)

        def loss(p, loc):
            bound = lambda z0, h: flow.apply(p, z0, h)  # noqa: E731
            z, log_q = flows.sample_and_log_prob(jax.random.key(3), loc, _SCALE, _CONTEXT, bound, 4)
            return jnp.mean(log_q + 0.5 * jnp.sum(jnp.square(z), -1))  # a KL estimate

        grads = jax.grad(loss, argnums=(0, 1))(params, _LOC)
        for leaf in jax.tree.leaves(grads):
            self.assertTrue(bool(jnp.all(jnp.isfinite(leaf))))
        self.assertGreater(float(jnp.abs(grads[0]['params']['step_0']['s']['kernel']).max()), 0)

    def test_bad_inputs_raise(self):
        with self.assertRaisesRegex(ValueError, 'loc and scale'):
            flows.sample_and_log_prob(
                jax.random.key(0), _LOC, _SCALE[:2], _CONTEXT, lambda z, h: (z, z[:, 0]), 2
            )
        with self.assertRaisesRegex(ValueError, 'flow_activation'):
            flows.IAF(num_steps=1, activation='swish').init(
                jax.random.key(0), jnp.zeros((1, _D)), _CONTEXT
            )


class IAFVAETest(absltest.TestCase):
    def test_protocol_model_scores_its_own_samples_consistently(self):
        from vae_jax import models

        model = flows.IAFVAE(
            latent_dim=3,
            encoder_dims=(8,),
            decoder_dims=(8,),
            context_dim=2,
            flow_steps=2,
            flow_hidden_dims=(6,),
        )
        models.check_model(model, (4, 4, 1), False)
        x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (4, 4, 1)), jnp.float32)
        variables = models.init_variables(model, jax.random.key(0), (4, 4, 1), False)
        # Randomise every parameter so the flow is not at its (linear) initialisation.
        variables = {'params': _randomised(variables['params'])}
        noise = {'z': jnp.zeros((5, 3)), 'z0': jax.random.normal(jax.random.key(1), (5, 3))}
        z = model.apply(variables, x, noise, method='sample_posterior')
        log_q = model.apply(variables, x, z, method='log_posterior')
        # Independent: change of variables with the Jacobian of z0 -> z by jacfwd.
        params = variables['params']
        loc, scale, context = model.apply(variables, x, method=model._encode)
        flow = flows.IAF(2, (6,), 1.0, 'elu')

        def single(z0):
            return flow.apply({'params': params['flow']}, z0[None], context)[0][0]

        jacs = jax.vmap(jax.jacfwd(single))(z['z0'])
        _, log_abs_det = np.linalg.slogdet(np.asarray(jacs, np.float64))
        base = distrax.MultivariateNormalDiag(loc, scale)
        np.testing.assert_allclose(
            log_q, jax.vmap(base.log_prob)(z['z0']) - log_abs_det, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(z['z'], jax.vmap(single)(z['z0']), rtol=1e-5, atol=1e-6)

    def test_optional_members_draw_n01_and_decode_the_bernoulli_mean(self):
        from vae_jax import models

        model = flows.IAFVAE(
            latent_dim=3, encoder_dims=(8,), decoder_dims=(8,), context_dim=2, flow_steps=1
        )
        variables = models.init_variables(model, jax.random.key(0), (4, 4, 1), False)
        variables = {'params': _randomised(variables['params'])}
        noise = {
            'z': jax.random.normal(jax.random.key(1), (5, 3)),
            'z0': jax.random.normal(jax.random.key(2), (5, 3)),
        }
        z = model.apply(variables, noise, method='sample_prior')
        self.assertEqual(set(z), {'z'})  # z0 belongs to the posterior only
        np.testing.assert_array_equal(z['z'], noise['z'])
        mean = np.asarray(model.apply(variables, z, method='decode_mean'), np.float64)
        self.assertEqual(mean.shape, (5, 16))
        # log p(x|z) is the Bernoulli log-pmf with that mean, computed here.
        x = np.random.default_rng(3).integers(0, 2, (4, 4, 1)).astype(np.float32)
        flat = x.reshape(-1).astype(np.float64)
        log_px = np.sum(flat * np.log(mean) + (1 - flat) * np.log1p(-mean), -1)
        np.testing.assert_allclose(
            model.apply(variables, x, z, method='log_likelihood'), log_px, rtol=1e-5, atol=1e-4
        )


def _randomised(params, seed=5, scale=0.5):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(tree, new)


_IAF_SHAPE = (4, 4, 1)
_IAF_MODEL = flows.IAFVAE(
    latent_dim=3,
    encoder_dims=(8,),
    decoder_dims=(8,),
    context_dim=2,
    flow_steps=2,
    flow_hidden_dims=(6,),
)


def _iaf_params():
    """Every parameter randomised, so the flow is not at its (linear) initialisation."""
    variables = models.init_variables(_IAF_MODEL, jax.random.key(0), _IAF_SHAPE, False)
    return _randomised(variables['params'])


class IAFVAEOnePassTest(parameterized.TestCase):
    def test_sample_and_log_posterior_is_sample_then_log_posterior(self):
        variables = {'params': _iaf_params()}
        x = jnp.asarray(np.random.default_rng(0).integers(0, 2, _IAF_SHAPE), jnp.float32)
        noise = {
            'z': jax.random.normal(jax.random.key(2), (5, 3)),
            'z0': jax.random.normal(jax.random.key(1), (5, 3)),
        }
        call = functools.partial(_IAF_MODEL.apply, variables)
        z, log_q = call(x, noise, method='sample_and_log_posterior')
        z_two = call(x, noise, method='sample_posterior')
        log_q_two = call(x, z_two, method='log_posterior')
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-6), z, z_two)
        self.assertEqual(log_q.shape, (5,))
        np.testing.assert_allclose(log_q, log_q_two, rtol=1e-5, atol=1e-5)

    @parameterized.named_parameters(
        ('elbo', 'elbo', dict(k_samples=4)),
        ('iwae_reparam', 'iwae', dict(k_samples=4)),
    )
    def test_training_loss_and_gradients_match_the_two_pass_path(self, objective, options):
        params = _iaf_params()
        value_a, grad_a = one_pass_testing.batch_loss(
            _IAF_MODEL, _IAF_SHAPE, objective, True, **options
        )(params)
        value_b, grad_b = one_pass_testing.batch_loss(
            _IAF_MODEL, _IAF_SHAPE, objective, False, **options
        )(params)
        np.testing.assert_allclose(value_a, value_b, rtol=1e-5)
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5), grad_a, grad_b
        )
        # The flow's parameters get a gradient through the one pass (its log-det included).
        flow_grads = jax.tree.leaves(grad_a['flow'])
        self.assertGreater(max(float(jnp.abs(g).max()) for g in flow_grads), 1e-3)


if __name__ == '__main__':
    absltest.main()
