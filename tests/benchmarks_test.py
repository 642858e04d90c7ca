"""The minimal JAX benchmark reference computes the objectives vae_jax trains.

`benchmarks/jax_minimal.py` writes the losses in closed form; here the same noise is pushed
through vae_jax's own distributions, so a timing of the two compares like with like.
"""

import functools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from benchmarks import hlo_fingerprint, jax_minimal
from vae_jax import distributions

B = 8


def _images(seed):
    x = jax.random.uniform(jax.random.key(seed), (B, 28, 28, 1)) < 0.3
    return x.astype(jnp.float32)


def _posterior_and_likelihood(model, method_encode, method_decode, params, x, eps):
    loc, log_scale = model.apply(params, x, method=method_encode)
    q = distributions.make_posterior(
        'diagonal', jnp.concatenate([loc, log_scale], -1), scale_transform='exp'
    )
    z = loc + jnp.exp(log_scale) * eps
    logits = model.apply(params, z, method=method_decode)
    p_x = distributions.make_likelihood(
        'bernoulli', logits.reshape(*z.shape[:-1], 28, 28, 1), event_ndims=3
    )
    return q, z, p_x


class MinimalJaxObjectivesTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        # The references below broadcast [K, B, D] samples against [B, D] posteriors and [B, D]
        # posteriors against the [D] prior, as distrax does; the suite otherwise raises on it.
        self.enter_context(jax.numpy_rank_promotion('allow'))

    @parameterized.parameters(1, 5)
    def test_dense_loss_is_the_negative_iwae_bound(self, k):
        model = jax_minimal.DenseVAE()
        x = _images(0)
        params = model.init(jax.random.key(1), x, jnp.zeros((B, model.latent)))
        key = jax.random.key(2)
        got = jax_minimal.dense_loss(params, model, key, x, k)

        eps = jax.random.normal(key, (k, B, model.latent))  # the draw dense_loss makes
        q, z, p_x = _posterior_and_likelihood(
            model, jax_minimal.DenseVAE.encode, jax_minimal.DenseVAE.decode, params, x, eps
        )
        prior = distributions.standard_normal_prior(model.latent)
        log_w = p_x.log_prob(x) + prior.log_prob(z) - q.log_prob(z)  # [K, B]
        expected = -jnp.mean(jax.nn.logsumexp(log_w, axis=0) - math.log(k))
        np.testing.assert_allclose(got, expected, rtol=1e-5)

    def test_conv_loss_is_the_negative_elbo_with_analytic_kl(self):
        model = jax_minimal.ConvVAE()
        x = _images(3)
        params = model.init(jax.random.key(4), x, jnp.zeros((B, model.latent)))
        key = jax.random.key(5)
        got = jax_minimal.conv_loss(params, model, key, x)

        eps = jax.random.normal(key, (B, model.latent))
        q, _, p_x = _posterior_and_likelihood(
            model, jax_minimal.ConvVAE.encode, jax_minimal.ConvVAE.decode, params, x, eps
        )
        kl = q.kl_divergence(distributions.standard_normal_prior(model.latent))
        expected = jnp.mean(-p_x.log_prob(x) + kl)
        np.testing.assert_allclose(got, expected, rtol=1e-5)


class HandFusedAdamTest(parameterized.TestCase):
    @parameterized.parameters(1e-8, 1e-4)
    def test_matches_optax_adam_over_three_steps(self, eps):
        params = {'w': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), 'b': jnp.ones((4,))}
        tx = optax.adam(1e-3, eps=eps)
        opt = tx.init(params)
        mine, (mu, nu) = params, jax_minimal.adam_init(params)
        update = jax.jit(functools.partial(jax_minimal.adam_update, learning_rate=1e-3, eps=eps))
        for t in range(3):
            grads = jax.tree.map(lambda p, t=t: jnp.sin(p * (t + 1)) + 0.1 * t, mine)
            updates, opt = tx.update(grads, opt, params)
            params = optax.apply_updates(params, updates)
            mine, mu, nu = update(mine, grads, mu, nu, jnp.asarray(t, jnp.int32))
            for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(params), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


class BernoulliNllTest(absltest.TestCase):
    def test_matches_float64_reference_and_its_gradient_at_zero(self):
        logits = np.linspace(-60, 60, 25).astype(np.float32)  # includes 0
        for x in (0.0, 1.0):
            got = jax.jit(jax_minimal.bernoulli_nll)(logits, x)
            t = logits.astype(np.float64)
            np.testing.assert_allclose(got, np.logaddexp(0, t) - t * x, rtol=1e-6, atol=1e-6)
            grad = jax.grad(lambda v, x=x: jnp.sum(jax_minimal.bernoulli_nll(v, x)))(logits)
            np.testing.assert_allclose(grad, 1 / (1 + np.exp(-t)) - x, atol=1e-6)


class ResultsTableTest(parameterized.TestCase):
    def _row(self, key, ms, batch=20, floor=True):
        row = {
            'workload': 'W4-k5',
            'key': key,
            'impl': key,
            'batch_size': batch,
            'images_per_s': batch / (ms / 1e3),
            'ms_per_step': ms,
            's_per_epoch': ms / 1e3 * (60_000 // batch),
            'paper_schedule_hours': ms / 1e3 * 9_840_000 / 3600 if batch == 20 else None,
            'speedup_vs_hand_written_jax': 2.0 / ms,
            'speedup_vs_torch_eager': 4.0 / ms,
            'speedup_vs_torch_compile': None,
        }
        if floor:
            row.update(fraction_of_gemm_peak=0.1, gemm_floor_s_per_epoch=1.0, floor_over_time=0.5)
        return row

    @parameterized.named_parameters(('cpu', 'cpu'), ('gpu', 'gpu'))
    def test_table_has_hours_and_ratios(self, backend):
        from benchmarks import run

        meta = dict(
            backend=backend, command='python -m benchmarks.run', date='d', machine='m', cpus=2,
            cpus_used=2, threads=2, jax='j', torch='t', xla_flags='', repeats=5,
            load_before='1', load_after='1', gpu='H100', driver='580', devices='cuda:0',
            gemm={'jax_gflops': {'best': 1.0}, 'torch_gflops': {'best': 2.0}}, peak_gflops=2.0,
        )  # fmt: skip
        rows = [self._row('jax', 4.0), self._row('jax_minimal', 2.0, floor=False)]
        rows.append(self._row('torch_eager', 4.0, batch=128))
        path = self.create_tempfile().full_path
        run.write_markdown(pathlib.Path(path), meta, rows)
        text = pathlib.Path(path).read_text()
        # 4 ms/step x 9,840,000 steps = 10.9 hours; the hand-written loop is twice as fast.
        self.assertIn(
            '| W4-k5 | 20 | jax | 5000 | 4.000 | 12.00 | 10.9 | **0.50x** | 1.00x | - |', text
        )
        self.assertIn('| W4-k5 | 128 | torch_eager | 32000 | 4.000 | 1.87 | - |', text)
        self.assertEqual('GPU: H100' in text, backend == 'gpu')


def _double(x):
    return x * 2.0 + 1.0


def _double_again(x):  # the same program, written on other lines
    return x * 2.0 + 1.0


def _triple(x):
    return x * 3.0 + 1.0


class HloFingerprintTest(absltest.TestCase):
    def _normalised(self, fn):
        text = jax.jit(fn).lower(jnp.ones((4, 3))).compile().as_text()
        return text, hlo_fingerprint.normalised_hlo(text)

    def test_the_same_program_from_other_source_lines_reads_the_same(self):
        raw_a, a = self._normalised(_double)
        raw_b, b = self._normalised(_double_again)
        self.assertNotEqual(raw_a, raw_b)  # the raw texts name their source lines
        self.assertEqual(a, b)
        self.assertNotIn('metadata=', a)
        self.assertIn('multiply', a)  # the program itself is kept

    def test_a_different_program_reads_differently(self):
        self.assertNotEqual(self._normalised(_double)[1], self._normalised(_triple)[1])


class VaeJaxTrainerTest(absltest.TestCase):
    """`make bench` times vae_jax's own chunk on the workloads' random data."""

    def test_trains_on_the_benchmark_data_not_a_real_data_set(self):
        from benchmarks import run, workloads

        bench = run.JaxTrainer('W4-k1', steps_per_call=3)
        stored = bench.run.train_data['image']  # held as vae_jax holds data: uint8
        self.assertEqual(stored.dtype, np.uint8)
        np.testing.assert_array_equal(
            stored.astype(np.float32) / np.float32(255),
            workloads.random_grey_images(workloads.NUM_TRAIN, 0),
        )
        # The same three steps from the same state give the same loss (and a finite one).
        state = jax.tree.map(jnp.copy, bench.state)
        perm, perm_epoch = jnp.copy(bench.perm), jnp.copy(bench.perm_epoch)
        first = bench.epoch(3)
        bench.state, bench.perm, bench.perm_epoch = state, perm, perm_epoch
        self.assertTrue(math.isfinite(first))
        self.assertEqual(bench.epoch(3), first)


if __name__ == '__main__':
    absltest.main()
