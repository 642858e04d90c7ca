"""`vae_jax.load` (vae_jax/trained.py) and parameters-only checkpoints (`export_params`)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl.testing import absltest
from scipy import special

from configs import test as test_config
from vae_jax import (
    checkpoints,
    data,
    evaluate,
    input_transform,
    models,
    trained,
    trainer,
    two_layer,
)

REPO = Path(__file__).resolve().parents[1]
K = 20  # Importance samples: enough to compare, cheap to compute.
NUM_EXAMPLES = 40
NUM_DRAWS = 20_000  # Prior draws of the Monte-Carlo checks.
# Monte-Carlo tolerance: 5 standard errors (a two-sided normal tail of 6e-7 per comparison).
NUM_SE = 5.0

# Loads the run in a process that has no data directory and cannot read any data set, and
# prints log p(x) of the examples in an .npz (the test split, saved by the test).
_LOAD = r"""
import json, sys
import jax
import numpy as np
jax.config.update('jax_disable_most_optimizations', True)  # As tests/conftest.py: same numbers.
from vae_jax import data


def no_data(*args, **kwargs):
    raise AssertionError('vae_jax.load read a data set')


data.get_datasets = data._read_tfds_split = data._load_digits = no_data
import vae_jax

workdir, npz, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = vae_jax.load(workdir)
arrays = np.load(npz)
log_px = model.log_likelihood(model.eval_key, arrays['images'], k, arrays['labels'])
print(json.dumps({'step': model.step, 'log_px': log_px.tolist()}))
"""


class LoadTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
        cls.config = test_config.get_config()
        cls.workdir = cls.root / 'run'
        trainer.train_and_evaluate(cls.config, cls.workdir)
        cls.result = evaluate.evaluate(
            cls.workdir, k_samples=K, max_examples=NUM_EXAMPLES, pictures=False, progress=False
        )
        test = data.get_datasets(cls.config.input)[1]
        spec = input_transform.spec_from(cls.config.input, test['image'])
        cls.images = np.asarray(input_transform.to_model_input(test['image'][:NUM_EXAMPLES], spec))
        cls.labels = test['label'][:NUM_EXAMPLES]

    def _load_in_clean_process(self, workdir):
        npz = self.root / 'examples.npz'
        np.savez(npz, images=self.images, labels=self.labels)
        env = {k: v for k, v in os.environ.items() if k != 'TFDS_DATA_DIR'}
        env['JAX_PLATFORMS'] = 'cpu'
        proc = subprocess.run(
            [sys.executable, '-c', _LOAD, str(workdir), str(npz), str(K)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def test_log_likelihood_reproduces_the_evaluated_nll_without_data(self):
        out = self._load_in_clean_process(self.workdir)
        self.assertEqual(out['step'], self.config.num_train_steps)
        self.assertEqual(self.result['nll_k'], K)
        np.testing.assert_allclose(-np.mean(out['log_px']), self.result['nll'], rtol=1e-5)

    def test_methods_shapes_and_agreement_with_the_trainer_state(self):
        model = trained.load(self.workdir)
        state, step = checkpoints.load(self.workdir, trainer.Run(self.config).create_train_state())
        self.assertEqual(model.step, step)
        jax.tree.map(np.testing.assert_array_equal, model.variables['params'], state.params)
        x = self.images[:5]
        d = self.config.model.latent_dim
        q = model.encode(x)
        self.assertEqual(q.mean().shape, (5, d))
        self.assertEqual(model.decode(q.mean()).mean().shape, x.shape)
        np.testing.assert_allclose(
            model.reconstruct(x), model.decode(q.mean()).mean(), rtol=1e-5, atol=1e-6
        )
        self.assertEqual(model.sample(jax.random.key(0), 7).shape, (7, *x.shape[1:]))
        with self.assertRaisesRegex(ValueError, r'x must be \[B, 8, 8, 1\].*got \(8, 8, 1\)'):
            model.encode(x[0])

    def test_exported_params_only_checkpoint_loads_evaluates_and_refuses_to_train(self):
        workdir = self.root / 'exported'
        shutil.copytree(self.workdir, workdir)
        path = checkpoints.export_params(workdir)
        self.assertEqual(path, workdir / 'checkpoints' / '12')
        self.assertEqual([p.name for p in (workdir / 'checkpoints').iterdir()], ['12'])
        self.assertEqual(checkpoints.export_params(workdir), path)  # Idempotent.
        exported, original = trained.load(workdir), trained.load(self.workdir)
        jax.tree.map(np.testing.assert_array_equal, exported.variables, original.variables)
        out = self._load_in_clean_process(workdir)
        np.testing.assert_allclose(-np.mean(out['log_px']), self.result['nll'], rtol=1e-5)
        again = evaluate.evaluate(
            workdir,
            k_samples=K,
            max_examples=NUM_EXAMPLES,
            pictures=False,
            progress=False,
            output='again.json',
        )
        self.assertAlmostEqual(again['nll'], self.result['nll'], places=5)
        # Finished: returns its eval.json; asked for more steps: refuses clearly.
        self.assertEqual(trainer.train_and_evaluate(self.config, workdir)['step'], 12)
        longer = test_config.get_config()
        longer.num_train_steps = 18
        with self.assertRaisesRegex(RuntimeError, r'holds parameters only.*cannot resume'):
            trainer.train_and_evaluate(longer, workdir)

    def test_unfinished_run_is_not_exported(self):
        workdir = self.root / 'unfinished'
        trainer.train_and_evaluate(self.config, workdir, stop_at_step=6)
        with self.assertRaisesRegex(ValueError, r'is not finished \(newest checkpoint at step 6'):
            checkpoints.export_params(workdir)

    def test_committed_iwae_run_loads(self):
        workdir = REPO / 'experiments' / 'iwae_mnist' / 'workdirs' / 'iwae_k5'
        if not (workdir / 'checkpoints').is_dir():
            self.skipTest(f'{workdir} is not in this checkout')
        model = trained.load(workdir)
        self.assertEqual(model.parts.data_shape, (28, 28, 1))
        self.assertEqual(model.step, model.config.num_train_steps)
        x = np.zeros((2, 28, 28, 1), np.float32)
        log_px = model.log_likelihood(jax.random.key(0), x, 8)
        self.assertEqual(log_px.shape, (2,))
        self.assertTrue(np.all(np.isfinite(log_px)))


def _mixture_log_pdf(z, weights, locs, scales):
    """numpy log sum_k w_k N(z; loc_k, diag(scale_k^2)): z [..., D] -> [...]."""
    d = locs.shape[-1]
    log_n = (
        -0.5 * np.sum(np.square((z[..., None, :] - locs) / scales), -1)
        - np.sum(np.log(scales), -1)
        - 0.5 * d * np.log(2 * np.pi)
    )
    return special.logsumexp(log_n + np.log(weights), axis=-1)


class LearnedPriorSampleTest(absltest.TestCase):
    """`sample_prior` / `sample` of the built-in VAE with a learned prior, at set parameters.

    The draws z [N, 2] are checked against the mixture written out in numpy: the mean and
    covariance against the mixture's, the mean of the model's log p(z) against the integral of
    p log p on a grid, and the fraction of draws below each decile of log p(Z) (from the same
    grid) against 10%, 20%, ...; each within NUM_SE standard errors.
    """

    def _model(self, prior):
        config = test_config.get_config()  # 8x8 digits, latent_dim 2, dense(16) encoder
        config.model.prior.name = prior
        config.model.prior.num_components = 3
        parts = trained.build(config)
        variables = models.init_variables(parts.model, jax.random.key(0), parts.data_shape, False)
        return parts, jax.device_get(variables)

    def _check_draws(self, model, weights, locs, scales):
        z = model.sample_prior(jax.random.key(7), NUM_DRAWS)
        self.assertEqual(z.shape, (NUM_DRAWS, 2))
        np.testing.assert_array_equal(z, model.sample_prior(jax.random.key(7), NUM_DRAWS))
        z64 = z.astype(np.float64)
        log_prior = np.asarray(
            model.parts.model.apply(model.variables, {'z': jnp.asarray(z)}, method='log_prior'),
            np.float64,
        )
        # The model's own log p(z) is the numpy mixture's.
        np.testing.assert_allclose(
            log_prior, _mixture_log_pdf(z64, weights, locs, scales), rtol=1e-4, atol=1e-4
        )
        mean = weights @ locs
        cov = np.einsum('k,ki,kj->ij', weights, locs, locs) + np.diag(weights @ scales**2)
        cov -= np.outer(mean, mean)
        n = z.shape[0]
        np.testing.assert_array_less(np.abs(z64.mean(0) - mean), NUM_SE * np.sqrt(np.diag(cov) / n))
        centred = z64 - z64.mean(0)
        products = centred[:, :, None] * centred[:, None, :]  # [N, 2, 2]
        np.testing.assert_array_less(
            np.abs(products.mean(0) - cov), NUM_SE * products.std(0) / np.sqrt(n)
        )
        # A grid over +-6 scales of every component, cells of a 15th of the smallest scale.
        step = scales.min() / 15
        low, high = (locs - 6 * scales).min(0), (locs + 6 * scales).max(0)
        axes = [np.arange(lo, hi, step) + step / 2 for lo, hi in zip(low, high, strict=True)]
        grid = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 2)
        log_p = _mixture_log_pdf(grid, weights, locs, scales)
        mass = np.exp(log_p) * step**2
        self.assertAlmostEqual(mass.sum(), 1.0, delta=1e-4)
        self.assertLess(abs(log_prior.mean() - mass @ log_p), NUM_SE * log_prior.std() / np.sqrt(n))
        order = np.argsort(log_p)
        deciles = np.arange(1, 10) / 10
        thresholds = log_p[order][np.searchsorted(np.cumsum(mass[order]), deciles)]
        below = np.mean(log_prior[:, None] < thresholds[None], axis=0)
        # The grid's deciles are off by at most one cell's mass (< 1e-4 here).
        np.testing.assert_array_less(
            np.abs(below - deciles), NUM_SE * np.sqrt(deciles * (1 - deciles) / n) + 1e-4
        )

    def test_mixture_of_gaussians_draws_components_by_their_weights(self):
        parts, variables = self._model('mog')
        # Unequal weights: drawing the components uniformly moves the mean and E[log p(z)] by
        # ~50 standard errors each.
        weights = np.array([0.6, 0.3, 0.1])
        locs = np.array([[-3.0, 0.0], [2.0, 2.0], [0.0, -4.0]])
        scales = np.array([[0.5, 1.0], [1.5, 0.3], [0.7, 0.7]])
        variables['params']['prior_mixture'] = {
            'logits': np.log(weights).astype(np.float32),
            'loc': locs.astype(np.float32),
            'raw_scale': np.log(np.expm1(scales)).astype(np.float32),  # softplus^-1
        }
        model = trained.TrainedModel(parts, variables, step=0)
        self._check_draws(model, weights, locs, scales)
        # sample decodes the draws of the same key.
        key = jax.random.key(3)
        np.testing.assert_allclose(
            model.sample(key, 6),
            model.decode(model.sample_prior(key, 6)).mean(),
            rtol=1e-6,
            atol=1e-6,
        )

    def test_vamp_prior_draws_from_the_posterior_at_the_pseudo_inputs(self):
        parts, variables = self._model('vamp')
        rng = np.random.default_rng(4)
        params = variables['params']
        params['pseudo_inputs']['raw'] = rng.normal(size=(3, 8, 8, 1)).astype(np.float32) * 4
        dense = params['encoder']['Dense_0']
        dense['kernel'] = rng.normal(size=(64, 16)).astype(np.float32) * 0.5
        head = params['encoder']['head']
        # The scales' outputs are 0 (softplus(0) = 0.69 for every component), the locs vary.
        head['kernel'] = np.concatenate(
            [rng.normal(size=(16, 2)), np.zeros((16, 2))], axis=1
        ).astype(np.float32)
        head['bias'] = np.zeros((4,), np.float32)
        model = trained.TrainedModel(parts, variables, step=0)
        # The components q(z|u_k), with the encoder written out in numpy.
        u = 1 / (1 + np.exp(-params['pseudo_inputs']['raw'].reshape(3, 64).astype(np.float64)))
        h = np.maximum(u @ dense['kernel'] + dense['bias'], 0.0)
        out = h @ head['kernel'] + head['bias']
        locs, scales = out[:, :2], np.log1p(np.exp(out[:, 2:]))
        self._check_draws(model, np.full(3, 1 / 3), locs, scales)

    def test_standard_normal_draws_are_the_normal_of_the_key(self):
        parts, variables = self._model('standard_normal')
        model = trained.TrainedModel(parts, variables, step=0)
        key = jax.random.key(5)
        np.testing.assert_array_equal(
            model.sample_prior(key, 4), jax.random.normal(key, (4, 2), jnp.float32)
        )


class _WithoutOptionalMembers(two_layer.TwoLayerVAE):
    """The two-layer model as a model of one's own without the protocol's optional members."""

    sample_prior = None
    decode_mean = None


class ProtocolModelTest(absltest.TestCase):
    """`load` of a run of a model of its own: the two-layer model, trained a few steps on 28x28."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        root = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
        rng = np.random.default_rng(0)
        npz = root / 'images.npz'
        cls.test_images = rng.random((32, 28, 28)) < 0.3
        np.savez(npz, train_images=rng.random((64, 28, 28)) < 0.3, test_images=cls.test_images)
        config = test_config.get_config()
        config.input.dataset = 'npz'
        config.input.path = str(npz)
        config.input.num_test_examples = 32
        config.num_train_steps = 6
        config.model.module = 'vae_jax.two_layer:TwoLayerVAE'
        config.model.module_kwargs = ml_collections.ConfigDict(
            dict(latent_dims=(4, 2), encoder_dims=((16,), (8,)), decoder_dims=((8,), (16,)))
        )
        cls.workdir = root / 'run'
        trainer.train_and_evaluate(config, cls.workdir)
        cls.model = trained.load(cls.workdir)

    def test_sample_decodes_ancestral_prior_draws(self):
        model = self.model
        self.assertEqual(model.step, 6)
        samples = model.sample(jax.random.key(0), 5)
        self.assertEqual(samples.shape, (5, 28, 28, 1))
        self.assertTrue(np.all((samples >= 0) & (samples <= 1)))
        np.testing.assert_array_equal(samples, model.sample(jax.random.key(0), 5))
        self.assertFalse(np.allclose(samples, model.sample(jax.random.key(1), 5)))
        z = model.sample_prior(jax.random.key(0), 5)
        self.assertEqual(jax.tree.map(np.shape, z), {'z1': (5, 4), 'z2': (5, 2)})
        mean = model.parts.model.apply(model.variables, z, method='decode_mean')  # [5, 784]
        np.testing.assert_allclose(samples.reshape(5, -1), mean, rtol=1e-5, atol=1e-6)

    def test_reconstruct_is_the_likelihood_mean_at_the_zero_noise_posterior_sample(self):
        model = self.model
        x = self.test_images[:3, :, :, None].astype(np.float32)
        recon = model.reconstruct(x)
        self.assertEqual(recon.shape, (3, 28, 28, 1))
        self.assertTrue(np.all((recon > 0) & (recon < 1)))
        noise = {'z1': jnp.zeros((1, 4)), 'z2': jnp.zeros((1, 2))}
        for b in range(3):
            z = model.parts.model.apply(model.variables, x[b], noise, method='sample_posterior')
            log_px = model.parts.model.apply(model.variables, x[b], z, method='log_likelihood')
            mean, flat = recon[b].reshape(-1).astype(np.float64), x[b].reshape(-1)
            expected = np.sum(flat * np.log(mean) + (1 - flat) * np.log1p(-mean))
            np.testing.assert_allclose(log_px[0], expected, rtol=1e-5)

    def test_encode_and_decode_say_what_works_instead(self):
        x = self.test_images[:2, :, :, None].astype(np.float32)
        with self.assertRaisesRegex(
            ValueError, r'encode: .*\(TwoLayerVAE\).*sample and reconstruct'
        ):
            self.model.encode(x)
        with self.assertRaisesRegex(ValueError, r'decode: .*\(TwoLayerVAE\)'):
            self.model.decode(np.zeros((2, 4)))

    def test_a_model_without_the_optional_members_is_told_which_it_lacks(self):
        module = _WithoutOptionalMembers(
            latent_dims=(4, 2), encoder_dims=((16,), (8,)), decoder_dims=((8,), (16,))
        )
        parts = trained.build(self.model.config, model=module)
        model = trained.TrainedModel(parts, self.model.variables, self.model.step)
        x = self.test_images[:2, :, :, None].astype(np.float32)
        self.assertEqual(model.log_likelihood(jax.random.key(0), x, 4).shape, (2,))
        with self.assertRaisesRegex(
            ValueError,
            r'sample: .*\(_WithoutOptionalMembers\), which has no sample_prior\(noise, y=None, '
            r'train=False\) -> z and no decode_mean\(z, y=None, train=False\)',
        ):
            model.sample(jax.random.key(0), 2)
        with self.assertRaisesRegex(ValueError, r'sample_prior: .*has no sample_prior\(noise'):
            model.sample_prior(jax.random.key(0), 2)
        with self.assertRaisesRegex(ValueError, r'reconstruct: .*has no decode_mean\(z'):
            model.reconstruct(x)


if __name__ == '__main__':
    absltest.main()
