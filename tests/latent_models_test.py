"""The general objectives over log-weights, and models that follow the protocol.

Reference model: a linear-Gaussian chain z2 -> z1 -> x,
    z2 ~ N(0, I_2),  z1 | z2 ~ N(A z2 + a, s1^2 I_3),  x | z1 ~ N(W z1 + b, s^2 I_4).
Its evidence log p(x) and its posterior p(z1, z2 | x) = p(z1 | x) p(z2 | z1) are exact Gaussians,
and the posterior is representable by a hierarchical q(z1 | x) q(z2 | z1) with full-covariance
layers, so every bound and every gradient estimator has a known answer. The chain is a Flax
module that follows the protocol, bound by `steps.make_model_binder` like any user model.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from scipy import stats

from configs import default
from vae_jax import evaluation, losses, models, objectives, steps, zoo_objectives

_D1, _D2, _M, _S1, _S = 3, 2, 4, 0.7, 0.5
_RNG = np.random.default_rng(0)
_A, _AV = _RNG.normal(size=(_D1, _D2)), _RNG.normal(size=_D1)
_W, _B = _RNG.normal(size=(_M, _D1)), _RNG.normal(size=_M)
_X = _RNG.normal(size=_M).astype(np.float32)
_S1COV = _A @ _A.T + _S1**2 * np.eye(_D1)  # Cov z1
_LOG_EVIDENCE = stats.multivariate_normal(_W @ _AV + _B, _W @ _S1COV @ _W.T + _S**2 * np.eye(_M))
_LOG_EVIDENCE = float(_LOG_EVIDENCE.logpdf(_X))
# p(z1 | x)
_P1 = np.linalg.inv(np.linalg.inv(_S1COV) + _W.T @ _W / _S**2)
_M1 = _P1 @ (np.linalg.solve(_S1COV, _AV) + _W.T @ (_X - _B) / _S**2)
# p(z2 | z1) = N(C z1 + c, P2)
_P2 = np.linalg.inv(np.eye(_D2) + _A.T @ _A / _S1**2)
_C = _P2 @ _A.T / _S1**2
_EXACT = {
    'm1': _M1,
    'L1': np.linalg.cholesky(_P1),
    'C': _C,
    'c': -_C @ _AV,
    'L2': np.linalg.cholesky(_P2),
}
_WRONG = {
    'm1': _M1 + 0.5 * np.sqrt(np.diag(_P1)),
    'L1': 0.7 * np.diag(np.sqrt(np.diag(_P1))),
    'C': 0.5 * _C,
    'c': -_C @ _AV + 0.3,
    'L2': 1.3 * np.linalg.cholesky(_P2),
}
_NUM_KEYS = 500


def _mvn_log_prob(z, loc, scale_tril):
    """log N(z; loc, L L^T) for z [K, D], loc [K, D] or [1, D], lower-triangular L [D, D]."""
    diff = z - loc
    white = jax.scipy.linalg.solve_triangular(scale_tril, diff.T, lower=True).T
    d = z.shape[-1]
    log_det = jnp.sum(jnp.log(jnp.abs(jnp.diag(scale_tril))))
    return -0.5 * jnp.sum(jnp.square(white), -1) - log_det - 0.5 * d * np.log(2 * np.pi)


class LinearGaussianChain(nn.Module):
    """The chain above with q(z1|x) q(z2|z1) as learnable parameters (starting at `start`)."""

    start: str = 'wrong'

    @property
    def latent_shapes(self):
        return {'z1': (_D1,), 'z2': (_D2,)}

    def setup(self):
        values = _EXACT if self.start == 'exact' else _WRONG
        self.q = {
            name: self.param(name, lambda key, v=v: jnp.asarray(v, jnp.float32))
            for name, v in values.items()
        }

    def _q(self):
        # Lower-triangular scales, so the sampler and the density are the same distribution.
        return {**self.q, 'L1': jnp.tril(self.q['L1']), 'L2': jnp.tril(self.q['L2'])}

    def sample_posterior(self, x, noise, y=None, train=False):
        q = self._q()
        z1 = q['m1'][None] + noise['z1'] @ q['L1'].T
        z2 = z1 @ q['C'].T + q['c'][None] + noise['z2'] @ q['L2'].T
        return {'z1': z1, 'z2': z2}

    def log_posterior(self, x, z, y=None, train=False):
        q = self._q()
        loc2 = z['z1'] @ q['C'].T + q['c'][None]
        return _mvn_log_prob(z['z1'], q['m1'][None], q['L1']) + _mvn_log_prob(
            z['z2'], loc2, q['L2']
        )

    def log_likelihood(self, x, z, y=None, train=False):
        loc = z['z1'] @ jnp.asarray(_W.T, jnp.float32) + jnp.asarray(_B, jnp.float32)[None]
        return _mvn_log_prob(jnp.broadcast_to(x, loc.shape), loc, _S * jnp.eye(_M))

    def log_prior(self, z, y=None, train=False):
        z2 = z['z2']
        loc1 = z2 @ jnp.asarray(_A.T, jnp.float32) + jnp.asarray(_AV, jnp.float32)[None]
        return _mvn_log_prob(z['z1'], loc1, _S1 * jnp.eye(_D1)) + _mvn_log_prob(
            z2, jnp.zeros_like(z2), jnp.eye(_D2)
        )


def _static_for(model, objective='iwae'):
    config = default.get_config()
    config.objective = objective
    return steps.StepConfig.from_config(config, (_M,), model)


@functools.cache
def _chain(init):
    model = LinearGaussianChain(init)
    params = models.init_variables(model, jax.random.key(0), (_M,), False)['params']
    return model, params, _static_for(model)


def _objective_fn(init, objective, **kwargs):
    """(params, key) -> the objective's terms on the chain, bound through the library."""
    model, _, static = _chain(init)

    def fn(params, key):
        bind = steps.make_model_binder(model.apply, params, {}, static, train=True)
        return objective(key, bind(jnp.asarray(_X), None), **kwargs)

    return fn


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


class LinearGaussianChainTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('elbo_mc', losses.model_elbo, dict(k_samples=3, kl_samples=3)),
        ('iwae_reparam', losses.model_iwae, dict(k_samples=5)),
        ('iwae_stl', losses.model_iwae, dict(k_samples=5, estimator='stl')),
        ('iwae_dreg', losses.model_iwae, dict(k_samples=5, estimator='dreg')),
    )
    def test_exact_posterior_gives_the_log_evidence_for_every_sample(self, objective, kwargs):
        fn = jax.jit(jax.vmap(_objective_fn('exact', objective, **kwargs), in_axes=(None, 0)))
        terms = fn(_chain('exact')[1], _keys(20))
        np.testing.assert_allclose(terms['loss'], -_LOG_EVIDENCE, rtol=0, atol=2e-4)
        np.testing.assert_allclose(terms['elbo'], _LOG_EVIDENCE, rtol=0, atol=2e-4)

    def test_exact_log_weights_are_the_log_evidence(self):
        model, params, static = _chain('exact')
        bind = steps.make_model_binder(model.apply, params, {}, static, train=False)
        log_w = losses.model_log_weights(
            jax.random.key(1), bind(jnp.asarray(_X), None), k_samples=50
        )
        np.testing.assert_allclose(log_w, np.full(50, _LOG_EVIDENCE), rtol=0, atol=2e-4)

    def test_wrong_posterior_iwae_bound_rises_with_k_below_the_log_evidence(self):
        _, params, _ = _chain('wrong')
        means, ses = [], []
        for k in (1, 10, 100):
            fn = jax.jit(
                jax.vmap(_objective_fn('wrong', losses.model_iwae, k_samples=k), in_axes=(None, 0))
            )
            bounds = np.asarray(fn(params, _keys(_NUM_KEYS, seed=k))['bound'], np.float64)
            means.append(bounds.mean())
            ses.append(bounds.std(ddof=1) / np.sqrt(_NUM_KEYS))
        for i in range(2):
            self.assertGreater(means[i + 1] - means[i], 3 * np.hypot(ses[i], ses[i + 1]), means)
        self.assertLess(means[-1], _LOG_EVIDENCE)
        self.assertGreater(means[0], _LOG_EVIDENCE - 30)  # a real but finite gap

    @parameterized.named_parameters(('stl', 'stl'), ('dreg', 'dreg'))
    def test_stl_and_dreg_gradients_vanish_for_every_layer_at_the_exact_posterior(self, estimator):
        # Every variational parameter of BOTH layers, for every sample; a q(z2|z1) evaluated with
        # live parameters (or a leak through z1 into a stopped-only-in-layer-1 q) breaks this.
        loss = _objective_fn('exact', losses.model_iwae, k_samples=4, estimator=estimator)
        grad = jax.jit(jax.vmap(jax.grad(lambda p, k: loss(p, k)['loss']), in_axes=(None, 0)))
        grads = grad(_chain('exact')[1], _keys(20))
        for name, g in grads.items():
            np.testing.assert_allclose(g, np.zeros_like(g), atol=2e-4, err_msg=name)

    def test_reparam_gradient_does_not_vanish_at_the_exact_posterior(self):
        # The control for the test above: the score-function term is there without stopping.
        loss = _objective_fn('exact', losses.model_iwae, k_samples=4)
        grads = jax.grad(lambda p: loss(p, jax.random.key(3))['loss'])(_chain('exact')[1])
        self.assertGreater(float(jnp.abs(grads['L1']).max()), 1e-2)
        self.assertGreater(float(jnp.abs(grads['L2']).max()), 1e-2)

    def test_dreg_is_unbiased_for_the_iwae_encoder_gradient(self):
        _, params, _ = _chain('wrong')

        def grads(estimator):
            loss = _objective_fn('wrong', losses.model_iwae, k_samples=5, estimator=estimator)
            g = jax.jit(jax.vmap(jax.grad(lambda p, k: loss(p, k)['loss']), in_axes=(None, 0)))
            out = g(params, _keys(1000, seed=7))
            return np.concatenate([np.asarray(out[n]).reshape(1000, -1) for n in sorted(out)], 1)

        dreg, reparam = grads('dreg'), grads('reparam')
        diff = dreg - reparam
        se = diff.std(0, ddof=1) / np.sqrt(len(diff))
        z = np.abs(diff.mean(0)) / np.maximum(se, 1e-6)
        self.assertLess(float(z.max()), 4.5, z)
        self.assertLess(float(dreg.var(0).sum()), float(reparam.var(0).sum()))


class EvaluationTest(parameterized.TestCase):
    def test_chunked_nll_and_layer_means_of_the_chain(self):
        model, params, static = _chain('exact')
        bound = steps.make_model_binder(model.apply, params, {}, static, train=False)(
            jnp.asarray(_X), None
        )
        fn = jax.jit(
            lambda: evaluation.model_log_likelihood(
                jax.random.key(4), bound, k_samples=3000, chunk_size=700
            )
        )
        log_px, means = fn()
        np.testing.assert_allclose(log_px, _LOG_EVIDENCE, rtol=0, atol=2e-4)
        # E_q[z1] = m1, E_q[z2] = C m1 + c; Monte-Carlo error ~ sd / sqrt(3000) < 0.02.
        np.testing.assert_allclose(means['z1'], _M1, atol=0.06)
        np.testing.assert_allclose(means['z2'], _C @ _M1 - _C @ _AV, atol=0.06)

    def test_general_nll_is_the_one_layer_nll_for_the_same_key(self):
        model, params, closures, _, x = OneLayerEquivalenceTest()._setup('standard_normal')
        encode, decode = _closures(model, params)
        key = jax.random.key(6)
        expected = evaluation.log_likelihood(key, x, encode, decode, k_samples=70, chunk_size=32)
        got, _ = evaluation.model_log_likelihood(
            key, losses.one_layer_model(x, encode, decode), k_samples=70, chunk_size=32
        )
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def _closures(model, params):
    """The built-in VAE's one-layer capability as the closures of the losses API."""
    variables = {'params': params}

    def encode(x):
        return model.apply(variables, x, method='posterior_distribution')

    def decode(z):
        return model.apply(variables, z, method='likelihood_distribution')

    return encode, decode


class OneLayerEquivalenceTest(parameterized.TestCase):
    """The built-in VAE through its distributions and through its four protocol methods agree."""

    def _setup(self, prior):
        config = default.get_config()
        config.model.encoder = 'dense(8)-tanh'
        config.model.decoder = 'dense(8)-tanh-dense(out)'
        config.model.latent_dim = 3
        config.model.likelihood = 'bernoulli'
        config.model.prior.name = prior
        config.model.prior.num_components = 4
        data_shape = (6,)
        model = models.create_model(config.model, data_shape, 'iwae')
        variables = models.init_variables(model, jax.random.key(0), data_shape, False)
        closures = steps.StepConfig.from_config(config, data_shape, model)
        self.assertTrue(closures.distributions)  # bound through its distributions
        protocol = dataclasses.replace(closures, distributions=False)  # through its four methods
        x = jnp.asarray(_RNG.integers(0, 2, size=data_shape), jnp.float32)
        return model, variables['params'], closures, protocol, x

    @parameterized.named_parameters(
        (f'{name}_{prior}', objective, kwargs, prior)
        for name, objective, kwargs in (
            ('elbo_mc', losses.model_elbo, dict(k_samples=3, analytic_kl=False, kl_samples=3)),
            ('iwae_reparam', losses.model_iwae, dict(k_samples=4)),
            ('iwae_stl', losses.model_iwae, dict(k_samples=4, estimator='stl')),
            ('iwae_dreg', losses.model_iwae, dict(k_samples=4, estimator='dreg')),
        )
        for prior in ('standard_normal', 'mog')
    )
    def test_same_values_and_gradients(self, objective, kwargs, prior):
        model, params, closures, protocol, x = self._setup(prior)

        def loss(params, key, static):
            bind = steps.make_model_binder(model.apply, params, {}, static, train=True)
            return objective(key, bind(x, None), beta=0.7, **kwargs)['loss']

        key = jax.random.key(5)
        value_a, grad_a = jax.value_and_grad(loss)(params, key, closures)
        value_b, grad_b = jax.value_and_grad(loss)(params, jax.random.clone(key), protocol)
        np.testing.assert_allclose(value_a, value_b, rtol=1e-5)
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), grad_a, grad_b
        )
        self.assertGreater(max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grad_a)), 0)

    def test_one_layer_api_is_the_general_path(self):
        # losses.iwae(encode, decode) == model_iwae(one_layer_model(...)) for the same key.
        model, params, closures, _, x = self._setup('standard_normal')
        encode, decode = _closures(model, params)
        key = jax.random.key(2)
        for estimator in losses.ESTIMATORS:
            a = losses.iwae(key, x, encode, decode, k_samples=3, estimator=estimator)
            b = losses.model_iwae(
                key,
                losses.one_layer_model(x, encode, decode),
                k_samples=3,
                estimator=estimator,
            )
            jax.tree.map(np.testing.assert_array_equal, a, b)


class OnePassChain(LinearGaussianChain):
    """The chain with the optional one-pass member; `log_q_offset` != 0 makes its log q wrong."""

    log_q_offset: float = 0.0

    def sample_and_log_posterior(self, x, noise, y=None, train=False):
        q = self._q()
        log_q = self.log_q_offset
        for name, scale_tril in (('z1', q['L1']), ('z2', q['L2'])):
            eps = noise[name]  # z = loc + L eps: log q = log N(eps; 0, I) - log|det L|
            log_q = log_q + (
                jnp.sum(-0.5 * jnp.square(eps), -1)
                - 0.5 * eps.shape[-1] * np.log(2 * np.pi)
                - jnp.sum(jnp.log(jnp.abs(jnp.diag(scale_tril))))
            )
        return self.sample_posterior(x, noise), log_q


_OFFSET = 3.0


def _bound(model, params, train=True):
    """One example of `model` as a `losses.LatentModel`, bound through the library."""
    static = _static_for(model)
    return steps.make_model_binder(model.apply, params, {}, static, train=train)(
        jnp.asarray(_X), None
    )


class OnePassPosteriorTest(parameterized.TestCase):
    """The optional `sample_and_log_posterior`: used for reparameterised samples, not STL/DReG."""

    def test_the_step_config_records_the_member(self):
        self.assertTrue(_static_for(OnePassChain('wrong')).one_pass_posterior)
        self.assertFalse(_static_for(LinearGaussianChain('wrong')).one_pass_posterior)
        _, params, _ = _chain('wrong')
        self.assertIsNone(_bound(LinearGaussianChain('wrong'), params).sample_and_log_q)
        self.assertIsNotNone(_bound(OnePassChain('wrong'), params).sample_and_log_q)

    def test_one_pass_log_q_is_the_log_posterior(self):
        _, params, _ = _chain('wrong')
        model = _bound(OnePassChain('wrong'), params)
        key = jax.random.key(8)
        z, log_q = model.sample_and_log_q(key, 6)
        jax.tree.map(np.testing.assert_array_equal, z, model.sample(key, 6))
        np.testing.assert_allclose(log_q, model.log_q(z, False), rtol=1e-5, atol=1e-5)

    @parameterized.named_parameters(
        ('elbo', losses.model_elbo, dict(k_samples=3, kl_samples=3)),
        ('elbo_fewer_kl_samples', losses.model_elbo, dict(k_samples=4, kl_samples=2)),
        ('iwae_reparam', losses.model_iwae, dict(k_samples=5)),
        ('miwae', zoo_objectives.model_miwae, dict(k_samples=4, miwae_m=2)),
        ('ciwae', zoo_objectives.model_ciwae, dict(k_samples=4)),
        ('piwae', zoo_objectives.model_piwae, dict(k_samples=4, piwae_m=2)),
    )
    def test_reparam_objectives_use_it_with_the_same_values_and_gradients(self, objective, kw):
        _, params, _ = _chain('wrong')

        def loss(params, model):
            return objective(jax.random.key(9), _bound(model, params), beta=0.7, **kw)['loss']

        value, grad = jax.value_and_grad(loss)(params, LinearGaussianChain('wrong'))
        value_one, grad_one = jax.value_and_grad(loss)(params, OnePassChain('wrong'))
        np.testing.assert_allclose(value_one, value, rtol=1e-5)
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5), grad_one, grad
        )
        # The control: a wrong log q moves the loss by beta * offset, so the member is used.
        wrong = loss(params, OnePassChain('wrong', log_q_offset=_OFFSET))
        np.testing.assert_allclose(wrong - value, 0.7 * _OFFSET, rtol=1e-4)

    def test_evaluation_uses_it(self):
        _, params, _ = _chain('wrong')
        key = jax.random.key(10)
        for fn in (
            lambda m: losses.model_log_weights(key, m, k_samples=7),
            lambda m: evaluation.model_log_likelihood(key, m, k_samples=9, chunk_size=4)[0],
        ):
            two = fn(_bound(LinearGaussianChain('wrong'), params, train=False))
            one = fn(_bound(OnePassChain('wrong'), params, train=False))
            wrong = fn(_bound(OnePassChain('wrong', log_q_offset=_OFFSET), params, train=False))
            np.testing.assert_allclose(one, two, rtol=1e-5)
            np.testing.assert_allclose(two - wrong, np.full_like(two, _OFFSET), rtol=1e-4)

    @parameterized.named_parameters(('stl', 'stl'), ('dreg', 'dreg'))
    def test_stl_and_dreg_do_not_use_it(self, estimator):
        # A deliberately wrong one-pass log q changes nothing: they call log_posterior.
        _, params, _ = _chain('wrong')

        def loss(params, model):
            terms = losses.model_iwae(
                jax.random.key(11), _bound(model, params), k_samples=4, estimator=estimator
            )
            return terms['loss'], terms

        grad_fn = jax.grad(loss, has_aux=True)
        grad, terms = grad_fn(params, LinearGaussianChain('wrong'))
        grad_wrong, terms_wrong = grad_fn(params, OnePassChain('wrong', log_q_offset=_OFFSET))
        jax.tree.map(np.testing.assert_array_equal, terms_wrong, terms)
        jax.tree.map(np.testing.assert_array_equal, grad_wrong, grad)
        self.assertGreater(max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grad)), 1e-3)

    def test_a_malformed_member_is_named(self):
        class BadLogQ(LinearGaussianChain):
            def sample_and_log_posterior(self, x, noise, y=None, train=False):
                return self.sample_posterior(x, noise), jnp.zeros((noise['z1'].shape[0], 1))

        class BadZ(LinearGaussianChain):
            def sample_and_log_posterior(self, x, noise, y=None, train=False):
                z = self.sample_posterior(x, noise)
                return {'z1': z['z1']}, jnp.zeros(noise['z1'].shape[:1])

        with self.assertRaisesRegex(ValueError, r'BadLogQ.sample_and_log_posterior returned shape'):
            models.check_model(BadLogQ('wrong'), (_M,), False)
        with self.assertRaisesRegex(ValueError, r'BadZ.sample_and_log_posterior must return'):
            models.check_model(BadZ('wrong'), (_M,), False)
        models.check_model(OnePassChain('wrong'), (_M,), False)

    def test_the_example_model_member_is_its_two_passes(self):
        from examples import my_models

        model = models.check_model(my_models.MyVAE(latent_dim=3), (6,), False)
        params = models.init_variables(model, jax.random.key(0), (6,), False)
        x = jnp.asarray(_RNG.integers(0, 2, size=(6,)), jnp.float32)
        noise = {'z': jax.random.normal(jax.random.key(1), (5, 3))}
        call = functools.partial(model.apply, params)
        z, log_q = call(x, noise, method='sample_and_log_posterior')
        z_two = call(x, noise, method='sample_posterior')
        jax.tree.map(np.testing.assert_array_equal, z, z_two)
        np.testing.assert_allclose(log_q, call(x, z_two, method='log_posterior'), rtol=1e-5)


class ErrorsTest(absltest.TestCase):
    def test_autoencoder_and_free_bits_need_a_one_layer_model(self):
        model, params, static = _chain('exact')
        bound = steps.make_model_binder(model.apply, params, {}, static, train=False)(
            jnp.asarray(_X), None
        )
        with self.assertRaisesRegex(ValueError, 'one-layer'):
            losses.model_autoencoder(jax.random.key(0), bound)
        with self.assertRaisesRegex(ValueError, 'free_bits=0.5'):
            losses.model_elbo(jax.random.key(0), bound, free_bits=0.5)

    def test_a_log_density_of_the_wrong_shape_names_the_method(self):
        model, params, static = _chain('exact')
        bound = steps.make_model_binder(model.apply, params, {}, static, train=False)(
            jnp.asarray(_X), None
        )
        bad = bound._replace(log_prior=lambda z: bound.log_prior(z)[:, None])
        with self.assertRaisesRegex(ValueError, r'log_prior\(z\) must return \[K\]=\(2,\)'):
            losses.model_iwae(jax.random.key(0), bad, k_samples=2)

    def test_unknown_objective_names_the_allowed_ones(self):
        with self.assertRaisesRegex(ValueError, "objective='vae' is not one of"):
            objectives.get('vae')


if __name__ == '__main__':
    absltest.main()
