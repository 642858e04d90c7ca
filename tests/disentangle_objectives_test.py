"""Tests for vae_jax.disentangle_objectives: DIP-VAE, AnnealedVAE and FactorVAE's TC estimate."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from vae_jax import disentangle_objectives as obj


def _whitened(b, d, seed=0):
    """[B, D] means whose biased batch covariance is exactly I (centred, orthogonal columns)."""
    x = np.random.default_rng(seed).normal(size=(b, d))
    x -= x.mean(0)
    q, _ = np.linalg.qr(x)
    return jnp.asarray(np.sqrt(b) * q, jnp.float32)


class DipTest(parameterized.TestCase):
    def test_zero_for_identity_covariance_dip_i(self):
        penalty = jax.jit(obj.dip_regularizer)(_whitened(64, 4))
        self.assertAlmostEqual(float(penalty), 0.0, delta=1e-8)

    def test_zero_for_identity_covariance_dip_ii(self):
        # Cov of the means 0.75 I plus mean posterior variance 0.25 I.
        mean = _whitened(64, 4) * np.sqrt(0.75)
        std = jnp.full((64, 4), 0.5)
        penalty = obj.dip_regularizer(mean, std, dip_type='ii')
        self.assertAlmostEqual(float(penalty), 0.0, delta=1e-8)
        # DIP-I ignores std, so the same batch is penalised there: (0.75 - 1)^2 * 4 * 100.
        self.assertAlmostEqual(float(obj.dip_regularizer(mean, std)), 25.0, delta=1e-4)

    def test_closed_form_for_a_known_covariance(self):
        # Means = whitened @ L^T have covariance L L^T exactly.
        chol = np.array([[1.0, 0.0], [0.5, 2.0]])
        mean = _whitened(128, 2) @ jnp.asarray(chol.T, jnp.float32)
        cov = chol @ chol.T  # [[1, 0.5], [0.5, 4.25]]
        expected = 3.0 * 2 * cov[0, 1] ** 2 + 7.0 * ((cov[0, 0] - 1) ** 2 + (cov[1, 1] - 1) ** 2)
        got = obj.dip_regularizer(mean, lambda_od=3.0, lambda_d=7.0)
        self.assertAlmostEqual(float(got), expected, places=3)
        np.testing.assert_allclose(obj.aggregate_covariance(mean), cov, atol=1e-5)

    @parameterized.named_parameters(('i', 'i'), ('ii', 'ii'))
    def test_positive_otherwise_with_finite_gradients(self, dip_type):
        rng = np.random.default_rng(1)
        mean = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
        std = jnp.asarray(rng.uniform(0.1, 1, size=(32, 3)), jnp.float32)
        self.assertGreater(float(obj.dip_regularizer(mean, std, dip_type=dip_type)), 0.0)
        grads = jax.grad(obj.dip_regularizer, argnums=(0, 1))(mean, std, dip_type=dip_type)
        self.assertTrue(all(np.isfinite(g).all() for g in grads))
        self.assertGreater(float(jnp.abs(grads[0]).sum()), 0.0)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "dip_type='iii'"):
            obj.dip_regularizer(jnp.zeros((4, 2)), dip_type='iii')
        with self.assertRaisesRegex(ValueError, 'needs the posterior std'):
            obj.dip_regularizer(jnp.zeros((4, 2)), dip_type='ii')
        with self.assertRaisesRegex(ValueError, r'\(4, 2\) and std \(4, 3\)'):
            obj.dip_regularizer(jnp.zeros((4, 2)), jnp.ones((4, 3)), dip_type='ii')


class AnnealedTest(absltest.TestCase):
    def test_capacity_schedule(self):
        values = [float(obj.capacity(s, c_max=20.0, num_steps=1000)) for s in (0, 250, 1000, 5000)]
        np.testing.assert_allclose(values, [0.0, 5.0, 20.0, 20.0])
        self.assertEqual(float(obj.capacity(0, c_max=20.0, num_steps=0)), 20.0)
        # Traced steps: one compile for every step.
        traces = []

        def fn(step):
            traces.append(None)
            return obj.capacity(step, num_steps=100)

        jitted = jax.jit(fn)
        np.testing.assert_allclose([float(jitted(s)) for s in (10, 50)], [2.5, 12.5])
        self.assertLen(traces, 1)

    def test_term_is_zero_at_capacity_and_pulls_kl_towards_it(self):
        kl = jnp.array([3.0, 5.0, 8.0])
        np.testing.assert_allclose(obj.annealed_kl_term(kl, 5.0, gamma=2.0), [4.0, 0.0, 6.0])
        grad = jax.grad(lambda k: obj.annealed_kl_term(k, 5.0).sum())(kl)
        # Below C the term pushes the KL up, above C down (|.| at exactly C: a subgradient).
        np.testing.assert_allclose(np.asarray(grad)[[0, 2]], [-1000.0, 1000.0])


class FactorVaeTcTest(absltest.TestCase):
    def test_permute_dims_shuffles_each_column_independently(self):
        z = jnp.arange(20.0).reshape(10, 2) * jnp.array([[1.0, -1.0]])
        out = obj.permute_dims(jax.random.key(0), z)
        for j in range(2):
            np.testing.assert_array_equal(np.sort(out[:, j]), np.sort(z[:, j]))
        # Rows were (2i, -(2i + 1)); independent permutations break that pairing somewhere.
        self.assertFalse(np.all(out[:, 1] == -(out[:, 0] + 1)))

    def test_discriminator_estimates_a_gaussians_total_correlation(self):
        # z ~ N(0, [[1, rho], [rho, 1]]): TC = -0.5 log(1 - rho^2) = 0.511 nats for rho = 0.8.
        rho = 0.8
        chol = jnp.array([[1.0, 0.0], [rho, np.sqrt(1 - rho**2)]])
        model = obj.Discriminator(hidden=(64, 64))
        params = model.init(jax.random.key(0), jnp.zeros((1, 2)))
        tx = optax.adam(3e-3)
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state, key):
            k1, k2, k3 = jax.random.split(key, 3)
            z = jax.random.normal(k1, (512, 2)) @ chol.T
            z_other = jax.random.normal(k2, (512, 2)) @ chol.T
            permuted = obj.permute_dims(k3, z_other)

            def loss(p):
                return obj.discriminator_loss(model.apply(p, z), model.apply(p, permuted))

            grads = jax.grad(loss)(params)
            updates, opt_state = tx.update(grads, opt_state)
            return optax.apply_updates(params, updates), opt_state

        for i in range(800):
            params, opt_state = step(params, opt_state, jax.random.fold_in(jax.random.key(1), i))
        z = jax.random.normal(jax.random.key(2), (20_000, 2)) @ chol.T
        estimate = float(obj.total_correlation(model.apply(params, z)))
        # A finite network and training run: within 0.1 nats (20%) of the closed form.
        self.assertAlmostEqual(estimate, -0.5 * np.log(1 - rho**2), delta=0.1)

    def test_tc_estimate_of_an_independent_gaussian_is_near_zero(self):
        model = obj.Discriminator(hidden=(8,))
        params = model.init(jax.random.key(0), jnp.zeros((1, 2)))
        logits = model.apply(params, jnp.zeros((3, 2)))
        np.testing.assert_allclose(obj.total_correlation(logits), logits[0, 0] - logits[0, 1])


if __name__ == '__main__':
    absltest.main()
