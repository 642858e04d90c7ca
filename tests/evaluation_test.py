"""Tests for vae_jax.evaluation on a linear-Gaussian model (pPCA) whose log p(x) is exact.

Model: z ~ N(0, I_D), x | z ~ N(W z + b, sigma^2 I), so p(x) = N(b, W W^T + sigma^2 I) and the
posterior is Gaussian with covariance S = (I + W^T W / sigma^2)^-1 and mean S W^T (x - b) / sigma^2.
The references are float64 numpy/scipy, independent of the code under test.
"""

import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from scipy import special, stats

from vae_jax import data, distributions, evaluation, losses

EVENT = (2, 3, 1)  # an 'image' of 6 values
X_DIM = 6
LATENT = 3
SIGMA = 0.5
LABEL_SHIFT = 0.25  # conditional model: the label shifts the data mean by LABEL_SHIFT * y

_rng = np.random.default_rng(0)
W = _rng.normal(size=(X_DIM, LATENT)) * 0.8
B = _rng.normal(size=(X_DIM,)) * 0.3
POST_COV = np.linalg.inv(np.eye(LATENT) + W.T @ W / SIGMA**2)
POST_GAIN = POST_COV @ W.T / SIGMA**2  # posterior mean = POST_GAIN (x - b)
# The deliberately imperfect diagonal q: shifted mean, marginal scales inflated by 1.3.
Q_SHIFT = 0.1
Q_SCALE = 1.3 * np.sqrt(np.diag(POST_COV))


def _data(n, seed=1, labels=None):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, LATENT))
    x = z @ W.T + B + SIGMA * rng.normal(size=(n, X_DIM))
    if labels is not None:
        x = x + LABEL_SHIFT * labels[:, None]
    return x.reshape((n,) + EVENT).astype(np.float32)


def _exact_log_px(x, labels=None):
    """[N] float64 log N(x; b + shift, W W^T + sigma^2 I)."""
    x = np.asarray(x, np.float64).reshape(-1, X_DIM)
    shift = 0.0 if labels is None else LABEL_SHIFT * np.asarray(labels, np.float64)[:, None]
    cov = W @ W.T + SIGMA**2 * np.eye(X_DIM)
    return np.atleast_1d(stats.multivariate_normal(B, cov).logpdf(x - shift))


def _make_bind(posterior='diagonal', dead_dims=()):
    """bind(y) -> (encode, decode) for the pPCA model with the requested q.

    posterior: 'diagonal' (imperfect), 'exact' (full-covariance true posterior) or 'delta'.
    dead_dims: latent dims whose posterior mean ignores x (for active units).
    """
    w, b = jnp.asarray(W, jnp.float32), jnp.asarray(B, jnp.float32)
    gain = np.array(POST_GAIN)
    gain[list(dead_dims)] = 0.0
    gain = jnp.asarray(gain, jnp.float32)
    chol = jnp.asarray(np.linalg.cholesky(POST_COV), jnp.float32)
    q_scale = jnp.asarray(Q_SCALE, jnp.float32)

    def bind(y):
        shift = 0.0 if y is None else LABEL_SHIFT * y.astype(jnp.float32)

        def encode(x):
            mean = gain @ (x.reshape(X_DIM) - b - shift)
            if posterior == 'exact':
                return distrax.MultivariateNormalTri(mean, chol, is_lower=True)
            if posterior == 'delta':
                return distrax.Independent(distrax.Deterministic(mean), 1)
            return distrax.MultivariateNormalDiag(mean + Q_SHIFT, q_scale)

        def decode(z):
            loc = z @ w.T + b.reshape((1,) * (z.ndim - 1) + (X_DIM,)) + shift
            loc = loc.reshape(z.shape[:-1] + EVENT)
            return distrax.Independent(distrax.Normal(loc, jnp.full_like(loc, SIGMA)), 3)

        return encode, decode

    return bind


def _log_weights64(key, x, k):
    """float64 log w_i for the diagonal q, from the samples z_i drawn from fold_in(key, i)."""
    encode, _ = _make_bind()(None)
    q = encode(jnp.asarray(x))
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(k))
    z = np.asarray(jax.vmap(lambda kk: q.sample(seed=kk))(keys), np.float64)  # [K, D]
    x = np.asarray(x, np.float64).reshape(X_DIM)
    log_px_z = stats.norm(z @ W.T + B, SIGMA).logpdf(x).sum(-1)
    log_pz = stats.norm(0.0, 1.0).logpdf(z).sum(-1)
    q_mean = POST_GAIN @ (x - B) + Q_SHIFT
    log_q = stats.norm(q_mean, Q_SCALE).logpdf(z).sum(-1)
    return log_px_z + log_pz - log_q


class LogLikelihoodTest(parameterized.TestCase):
    def test_imperfect_q_has_finite_weight_variance(self):
        # Var(w) is finite iff the integral of p(z|x)^2 / q(z) is, i.e. iff
        # 2 Sigma_q - Sigma_post is positive definite. The standard-error test relies on it.
        eig = np.linalg.eigvalsh(2 * np.diag(Q_SCALE**2) - POST_COV)
        self.assertGreater(eig.min(), 0.0)

    def test_estimate_within_monte_carlo_error_of_exact(self):
        k = 2000
        x = _data(1)[0]
        key = jax.random.key(3)
        encode, decode = _make_bind()(None)
        fn = jax.jit(
            lambda key, x: evaluation.log_likelihood(
                key, x, encode, decode, k_samples=k, chunk_size=300
            )
        )
        estimate = float(fn(key, jnp.asarray(x)))
        log_w = _log_weights64(key, x, k)
        # The estimator is log mean w; by the delta method its standard error is
        # std(w) / (sqrt(k) mean(w)).
        w = np.exp(log_w - log_w.max())
        se = w.std() / (np.sqrt(k) * w.mean())
        exact = _exact_log_px(x[None])[0]
        np.testing.assert_allclose(estimate, special.logsumexp(log_w) - np.log(k), atol=1e-4)
        self.assertLess(abs(estimate - exact), 4 * se + 1e-4)
        # The test could fail: with this q the one-sample ELBO is far below log p(x).
        self.assertGreater(exact - np.mean(log_w), 20 * se)

    @parameterized.named_parameters(
        ('chunk_1', 10, 1),
        ('remainder_k10_chunk3', 10, 3),
        ('remainder_k23_chunk7', 23, 7),
        ('chunk_equals_k', 20, 20),
        ('chunk_above_k', 20, 64),
        ('single_sample', 1, 4),
    )
    def test_chunked_equals_unchunked(self, k, chunk_size):
        x = jnp.asarray(_data(1, seed=2)[0])
        key = jax.random.key(5)
        encode, decode = _make_bind()(None)
        chunked = jax.jit(
            lambda key, x: evaluation.log_likelihood(
                key, x, encode, decode, k_samples=k, chunk_size=chunk_size
            )
        )(key, x)
        log_w = evaluation.log_importance_weights(key, x, encode, decode, k_samples=k)
        self.assertEqual(log_w.shape, (k,))
        np.testing.assert_allclose(chunked, jax.nn.logsumexp(log_w) - np.log(k), rtol=1e-6)
        # Independent float64 reference over exactly the first k draws.
        reference = special.logsumexp(_log_weights64(key, np.asarray(x), k)) - np.log(k)
        np.testing.assert_allclose(chunked, reference, rtol=1e-5)

    @parameterized.named_parameters(('k1', 1, 1), ('k10', 10, 4), ('k37', 37, 8))
    def test_exact_posterior_gives_log_px(self, k, chunk_size):
        x = _data(1, seed=4)[0]
        encode, decode = _make_bind('exact')(None)
        estimate = evaluation.log_likelihood(
            jax.random.key(0), jnp.asarray(x), encode, decode, k_samples=k, chunk_size=chunk_size
        )
        np.testing.assert_allclose(estimate, _exact_log_px(x[None])[0], atol=1e-4)

    @parameterized.named_parameters(('one_chunk', 10, 16), ('ragged_chunks', 37, 8))
    def test_chunked_ess_is_the_ess_of_the_same_weights(self, k, chunk_size):
        # The running sums of w and w^2 give (sum w)^2 / sum w^2 of exactly the k weights that
        # the estimate uses (sample i from fold_in(key, i)), computed here in float64.
        x = jnp.asarray(_data(1, seed=5)[0])
        encode, decode = _make_bind()(None)
        key = jax.random.key(3)
        model = losses.one_layer_model(x, encode, decode)
        _, _, ess = evaluation._model_log_likelihood_and_ess(key, model, k, chunk_size)
        log_w = np.asarray(
            evaluation.log_importance_weights(key, x, encode, decode, k_samples=k), np.float64
        )
        w = np.exp(log_w - log_w.max())
        np.testing.assert_allclose(ess, w.sum() ** 2 / np.sum(w**2), rtol=1e-4)
        self.assertBetween(float(ess), 1.0, float(k))

    def test_rejects_nonpositive_sizes(self):
        encode, decode = _make_bind()(None)
        x = jnp.asarray(_data(1)[0])
        with self.assertRaisesRegex(ValueError, 'k_samples'):
            evaluation.log_likelihood(jax.random.key(0), x, encode, decode, k_samples=0)


class ActiveUnitsTest(parameterized.TestCase):
    def test_counts_variance_above_threshold(self):
        rng = np.random.default_rng(0)
        stds = np.array([1.0, 0.3, 0.05, 0.2, 0.0])  # variances 1, 0.09, 0.0025, 0.04, 0
        means = rng.normal(size=(4000, 5)) * stds
        count, variances = evaluation.active_units(means)
        np.testing.assert_allclose(variances, means.var(axis=0))
        self.assertEqual(count, 3)
        self.assertEqual(evaluation.active_units(means, threshold=0.05)[0], 2)

    def test_rejects_wrong_rank(self):
        with self.assertRaisesRegex(ValueError, r'\[N, D\]'):
            evaluation.active_units(np.zeros(5))

    @parameterized.named_parameters(('none_dead', ()), ('one_dead', (1,)), ('two_dead', (0, 2)))
    def test_dataset_with_known_dead_dimensions(self, dead_dims):
        images = _data(50, seed=6)
        result = evaluation.evaluate_dataset(
            jax.random.key(0), images, None, _make_bind(dead_dims=dead_dims), k_list=(), nll_k=0
        )
        self.assertEqual(result['active_units'], LATENT - len(dead_dims))
        variances = np.asarray(result['posterior_mean_variance'])
        np.testing.assert_array_less(variances[list(dead_dims)], 1e-10)


class EvaluateDatasetTest(parameterized.TestCase):
    def test_values_against_references(self):
        n = 12
        images = _data(n, seed=7)
        result = evaluation.evaluate_dataset(
            jax.random.key(1), images, None, _make_bind(), k_list=(1, 4), nll_k=64, chunk_size=16
        )
        self.assertEqual(result['num_examples'], n)
        x = images.reshape(n, X_DIM).astype(np.float64)
        q_mean = (x - B) @ POST_GAIN.T + Q_SHIFT  # [N, D]
        kl_dims = 0.5 * (q_mean**2 + Q_SCALE**2 - 1 - np.log(Q_SCALE**2))
        np.testing.assert_allclose(result['kl_per_dim'], kl_dims.mean(0), rtol=1e-4)
        np.testing.assert_allclose(result['kl'], kl_dims.sum(1).mean(), rtol=1e-4)
        recon_mean = q_mean @ W.T + B
        np.testing.assert_allclose(result['recon_error'], np.mean((recon_mean - x) ** 2), rtol=1e-4)
        np.testing.assert_allclose(result['posterior_mean_variance'], q_mean.var(0), rtol=1e-3)
        np.testing.assert_allclose(result['elbo'], -(result['recon'] + result['kl']), rtol=1e-5)
        # Bounds in the right order (these gaps are many standard errors wide).
        self.assertLess(result['iwae_k1'], result['iwae_k4'])
        self.assertLess(result['iwae_k4'], -result['nll'])
        # An imperfect q: the ESS of the 4 weights lies strictly inside [1, 4].
        self.assertBetween(result['ess_k4'], 1.0 + 1e-3, 4.0 - 1e-3)

    def test_exact_posterior_every_estimate_is_log_px(self):
        n = 8
        labels = np.arange(n, dtype=np.int32) % 3
        images = _data(n, seed=8, labels=labels)
        result = evaluation.evaluate_dataset(
            jax.random.key(2),
            images,
            labels,
            _make_bind('exact'),
            k_list=(1, 10),
            nll_k=30,
            chunk_size=8,
        )
        exact = _exact_log_px(images, labels).mean()
        for name in ('iwae_k1', 'iwae_k10'):
            np.testing.assert_allclose(result[name], exact, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(-result['nll'], exact, atol=1e-4)
        # With the exact posterior every importance weight is p(x): the ESS is all K samples.
        np.testing.assert_allclose(result['ess_k10'], 10.0, rtol=1e-3)
        # The analytic-KL ELBO uses one sample for the reconstruction term: exact in mean only.
        self.assertLess(abs(result['elbo'] - exact), 2.0)

    @parameterized.named_parameters(('static', False), ('dynamic_binarize', True))
    def test_independent_of_batch_size(self, dynamic_binarize):
        n = 10
        labels = np.arange(n, dtype=np.int32) % 2
        images = _data(n, seed=9, labels=labels)
        if dynamic_binarize:
            images = 1 / (1 + np.exp(-images))  # grey values in (0, 1)
        results = [
            evaluation.evaluate_dataset(
                jax.random.key(4),
                images,
                labels,
                _make_bind(),
                k_list=(1, 5),
                nll_k=20,
                chunk_size=6,
                batch_size=batch_size,
                dynamic_binarize=dynamic_binarize,
            )
            for batch_size in (3, 7)
        ]
        for other in results[1:]:
            self.assertEqual(set(other), set(results[0]))
            for name, value in results[0].items():
                np.testing.assert_allclose(other[name], value, rtol=1e-5, err_msg=name)

    def test_dynamic_binarization_changes_the_data(self):
        images = 1 / (1 + np.exp(-_data(10, seed=9)))
        kwargs = dict(k_list=(), nll_k=0)
        grey = evaluation.evaluate_dataset(jax.random.key(4), images, None, _make_bind(), **kwargs)
        binary = evaluation.evaluate_dataset(
            jax.random.key(4), images, None, _make_bind(), dynamic_binarize=True, **kwargs
        )
        self.assertNotAlmostEqual(grey['recon_error'], binary['recon_error'], places=3)

    def test_variables_argument_compiles_once(self):
        traces = []

        def bind_fn(variables, y):
            traces.append(None)  # Python side effect: runs only while tracing.
            encode, decode = _make_bind()(y)
            return encode, lambda z: distrax.Independent(
                distrax.Normal(decode(z).distribution.loc * variables['gain'], SIGMA), 3
            )

        images = _data(6, seed=10)
        kwargs = dict(k_list=(2,), nll_k=4, chunk_size=2, batch_size=4)
        results = [
            evaluation.evaluate_dataset(
                jax.random.key(0), images, None, bind_fn, {'gain': jnp.float32(g)}, **kwargs
            )
            for g in (1.0, 0.5)
        ]
        self.assertLen(traces, 1)
        self.assertNotAlmostEqual(results[0]['recon_error'], results[1]['recon_error'])
        baseline = evaluation.evaluate_dataset(
            jax.random.key(0), images, None, _make_bind(), **kwargs
        )
        for name in ('elbo', 'iwae_k2', 'nll', 'recon_error'):
            np.testing.assert_allclose(results[0][name], baseline[name], rtol=1e-6)

    def test_point_mass_posterior(self):
        n = 5
        images = _data(n, seed=11)
        result = evaluation.evaluate_dataset(
            jax.random.key(0), images, None, _make_bind('delta'), k_list=(1,), nll_k=10
        )
        for name in ('elbo', 'kl', 'iwae_k1', 'nll', 'kl_per_dim'):
            self.assertIsNone(result[name], name)
        self.assertNotIn('bits_per_dim', result)
        x = images.reshape(n, X_DIM).astype(np.float64)
        recon_mean = (x - B) @ POST_GAIN.T @ W.T + B
        expected = -stats.norm(recon_mean, SIGMA).logpdf(x).sum(1).mean()
        np.testing.assert_allclose(result['recon'], expected, rtol=1e-5)
        self.assertEqual(result['active_units'], LATENT)

    def test_progress_reports_every_batch(self):
        calls = []
        evaluation.evaluate_dataset(
            jax.random.key(0),
            _data(7),
            None,
            _make_bind(),
            k_list=(),
            nll_k=0,
            batch_size=3,
            progress=lambda done, total: calls.append((done, total)),
        )
        self.assertEqual(calls, [(3, 7), (6, 7), (7, 7)])

    @parameterized.named_parameters(
        ('empty', 0, None, {}, 'empty'),
        ('label_count', 4, np.zeros(3, np.int32), {}, 'labels'),
        ('k_zero', 4, None, {'k_list': (0,)}, 'k_list'),
        ('batch_zero', 4, None, {'batch_size': 0}, 'batch_size'),
    )
    def test_errors(self, n, labels, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            evaluation.evaluate_dataset(jax.random.key(0), _data(n), labels, _make_bind(), **kwargs)


if __name__ == '__main__':
    absltest.main()


def _constant_likelihood_bind(likelihood, logits):
    """bind(y) -> (encode, decode): q = p(z) = N(0, I_2), p(x|z) with fixed `logits` [H, W, C].

    With q equal to the prior every importance weight is p(x|z) = p(x), so the importance-
    sampled NLL is exact whatever k.
    """

    def bind(y):
        del y

        def encode(x):
            del x
            return distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))

        def decode(z):
            params = jnp.broadcast_to(logits, z.shape[:-1] + logits.shape)
            return distributions.make_likelihood(likelihood, params, event_ndims=3)

        return encode, decode

    return bind


def _input_config(**overrides):
    import ml_collections

    values = dict(dataset='mnist', binarize='none', pad_to_32=False)
    values.update(overrides)
    return ml_collections.ConfigDict(
        dict(
            data_dir=None,
            num_train_examples=None,
            num_test_examples=None,
            toy_num_examples=100,
            toy_noise=0.2,
            **values,
        )
    )


class BitsPerDimTest(parameterized.TestCase):
    def _evaluate(self, likelihood, logits, images, **grid):
        result = evaluation.evaluate_dataset(
            jax.random.key(0),
            images,
            None,
            _constant_likelihood_bind(likelihood, jnp.asarray(logits, jnp.float32)),
            k_list=(),
            nll_k=3,
        )
        return result, evaluation.bits_per_dim(result['nll'], likelihood=likelihood, **grid)

    def test_fair_coin_bernoulli_is_one_bit(self):
        # Every binary pixel has probability 1/2: exactly 1 bit each.
        images = (np.random.default_rng(0).random((4, 28, 28, 1)) < 0.3).astype(np.float32)
        result, bpd = self._evaluate(
            'bernoulli', np.zeros((28, 28, 1)), images, num_levels=2, num_dims=784
        )
        np.testing.assert_allclose(result['nll'], 784 * np.log(2), rtol=1e-6)
        np.testing.assert_allclose(bpd['bits_per_dim'], 1.0, rtol=1e-6)

    def test_padding_is_not_counted(self):
        # A fair coin on the 28x28 pixels, near certainty (logit -30) on the zero padding:
        # 1 bit per real pixel, where dividing by the 1024 padded pixels would give 0.77.
        images = (np.random.default_rng(1).random((4, 28, 28, 1)) < 0.3).astype(np.float32)
        padded = data.pad_to_32(images)
        logits = data.pad_to_32(np.ones((1, 28, 28, 1), np.float32))[0] * 30.0 - 30.0
        grid = data.value_grid(_input_config(binarize='static', pad_to_32=True))
        self.assertEqual(grid, {'num_levels': 2, 'num_dims': 784, 'num_padding_dims': 240})
        _, bpd = self._evaluate('bernoulli', logits, padded, **grid)
        np.testing.assert_allclose(bpd['bits_per_dim'], 1.0, rtol=1e-6)
        self.assertIn('240 zero-padding', bpd['bits_per_dim_note'])

    def test_uniform_density_on_8_bit_data_is_eight_bits(self):
        # The continuous Bernoulli with logits 0 is uniform on [0, 1] (density 1): each 8-bit
        # value then has probability 1/256, exactly 8 bits.
        images = np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1)) / np.float32(255)
        result, bpd = self._evaluate(
            'continuous_bernoulli', np.zeros((28, 28, 1)), images.astype(np.float32),
            **data.value_grid(_input_config()),
        )  # fmt: skip
        np.testing.assert_allclose(result['nll'], 0.0, atol=1e-3)
        np.testing.assert_allclose(bpd['bits_per_dim'], 8.0, atol=1e-5)

    @parameterized.named_parameters(
        ('no_nll', None, 'bernoulli', 2, 0, 'no NLL'),
        ('toy', 1.0, 'gaussian', None, 0, 'real-valued'),
        ('toy_without_nll', None, 'gaussian', None, 0, 'real-valued'),
        ('continuous_on_binary', 50.0, 'continuous_bernoulli', 2, 0, 'continuous likelihood'),
        ('continuous_on_17_levels', 50.0, 'gaussian', 17, 0, '8-bit data only'),
        ('continuous_padded', -1800.0, 'continuous_bernoulli', 256, 240, 'zero-padded'),
        ('density_spikes', -5000.0, 'gaussian', 256, 0, 'exceeds 256'),
        ('negative_discrete_nll', -1.0, 'bernoulli', 2, 0, 'negative'),
        ('unknown_likelihood', 50.0, 'poisson', 2, 0, 'not known'),
    )
    def test_absent_where_undefined(self, nll, likelihood, levels, padding, reason):
        out = evaluation.bits_per_dim(
            nll, likelihood=likelihood, num_levels=levels, num_dims=784, num_padding_dims=padding
        )
        self.assertNotIn('bits_per_dim', out)
        self.assertIn('undefined', out['bits_per_dim_note'])
        self.assertIn(reason, out['bits_per_dim_note'])

    def test_absent_or_non_negative_for_every_likelihood_and_data_set(self):
        inputs = [dict(dataset=name) for name in data.TOY_DATASETS] + [
            dict(dataset=name, binarize=binarize, pad_to_32=pad)
            for name in data.TFDS_DATASETS + data.EMBEDDED_DATASETS
            for binarize in ('none', 'static', 'dynamic')
            for pad in (False, True)
        ]
        nlls = (None, -3000.0, -1800.0, 0.0, 80.0, 3000.0)  # -1800 ~ fashion_conv_cb's NLL
        for likelihood, overrides, nll in itertools.product(
            ('bernoulli', 'continuous_bernoulli', 'gaussian'), inputs, nlls
        ):
            grid = data.value_grid(_input_config(**overrides))
            out = evaluation.bits_per_dim(nll, likelihood=likelihood, **grid)
            with self.subTest(likelihood=likelihood, nll=nll, **overrides):
                self.assertIn('bits_per_dim_note', out)
                if 'bits_per_dim' in out:
                    self.assertGreaterEqual(out['bits_per_dim'], 0.0)

    @parameterized.named_parameters(
        ('mnist', dict(dataset='mnist'), 256, 784, 0),
        ('mnist_dynamic', dict(dataset='mnist', binarize='dynamic'), 2, 784, 0),
        ('binarized_mnist', dict(dataset='binarized_mnist'), 2, 784, 0),
        ('fashion_padded', dict(dataset='fashion_mnist', pad_to_32=True), 256, 784, 240),
        ('digits', dict(dataset='digits'), 17, 64, 0),
        ('pinwheel', dict(dataset='pinwheel'), None, 2, 0),
    )
    def test_value_grid(self, overrides, levels, dims, padding):
        self.assertEqual(
            data.value_grid(_input_config(**overrides)),
            {'num_levels': levels, 'num_dims': dims, 'num_padding_dims': padding},
        )
