"""Flax NNX models through the library (vae_jax/nnx_models.py): the same numbers as Linen.

`TinyNNXVAE` (one Gaussian layer, Bernoulli output, a learned prior scale) and `TinyLinenVAE`,
the same network in Linen with the same parameter names, are defined here. With the NNX
parameters copied into the Linen model they give the same loss and gradients; the NNX model
trains by import path (`model.module='nnx_models_test:TinyNNXVAE'`) and from Python with the
same result, resumes bit-identically, trains in a vectorised sweep of two seeds, and
`vae_jax.load` in a fresh process reproduces its evaluated NLL.
"""

import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from configs import test as test_config
from vae_jax import (
    build,
    checkpoints,
    data,
    evaluate,
    input_transform,
    models,
    nnx_models,
    protocol,
    steps,
    sweep,
    trained,
    trainer,
)

REPO = Path(__file__).resolve().parents[1]
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_DATA_DIM = 64  # The embedded digits: 8 x 8 x 1.
K = 8  # Importance samples of the NLL comparison.
NUM_EXAMPLES = 40


def _normal_log_prob(z, loc, scale):
    return jnp.sum(-0.5 * jnp.square((z - loc) / scale) - jnp.log(scale) - _HALF_LOG_2PI, -1)


class TinyNNXVAE(nnx.Module):
    """x -> 8 -> q(z|x) Gaussian [latent_dim]; z -> 8 -> Bernoulli p(x|z); p(z) = N(0, s^2 I)."""

    def __init__(self, latent_dim: int = 2, hidden: int = 8, *, rngs: nnx.Rngs):
        self.latent_dim = latent_dim
        self.encoder_hidden = nnx.Linear(_DATA_DIM, hidden, rngs=rngs)
        self.encoder_out = nnx.Linear(hidden, 2 * latent_dim, rngs=rngs)
        self.decoder_hidden = nnx.Linear(latent_dim, hidden, rngs=rngs)
        self.decoder_out = nnx.Linear(hidden, _DATA_DIM, rngs=rngs)
        self.prior_log_scale = nnx.Param(jnp.zeros(()))

    @property
    def latent_shapes(self):
        return {'z': (self.latent_dim,)}

    def _q(self, x):
        h = self.encoder_out(jnp.tanh(self.encoder_hidden(x.reshape(-1))))
        return h[: self.latent_dim], jax.nn.softplus(h[self.latent_dim :]) + 1e-4

    def _logits(self, z):
        return self.decoder_out(jnp.tanh(self.decoder_hidden(z['z'])))  # [K, M]

    def sample_posterior(self, x, noise, y=None, train=False):
        loc, scale = self._q(x)
        return {'z': loc[None] + scale[None] * noise['z']}

    def log_posterior(self, x, z, y=None, train=False):
        loc, scale = self._q(x)
        return _normal_log_prob(z['z'], loc[None], scale[None])

    def log_likelihood(self, x, z, y=None, train=False):
        flat, logits = x.reshape(-1), self._logits(z)
        return jnp.sum(flat[None] * logits - jax.nn.softplus(logits), -1)

    def log_prior(self, z, y=None, train=False):
        scale = jnp.full(z['z'].shape, jnp.exp(self.prior_log_scale[...]))
        return _normal_log_prob(z['z'], 0.0, scale)

    def sample_prior(self, noise, y=None, train=False):
        return {'z': jnp.exp(self.prior_log_scale[...]) * noise['z']}

    def decode_mean(self, z, y=None, train=False):
        return jax.nn.sigmoid(self._logits(z))  # [K, M]: the likelihood reads x flattened.


class TinyLinenVAE(nn.Module):
    """`TinyNNXVAE` in Linen: the same layers, parameter names and methods."""

    latent_dim: int = 2
    hidden: int = 8

    def setup(self):
        self.encoder_hidden = nn.Dense(self.hidden)
        self.encoder_out = nn.Dense(2 * self.latent_dim)
        self.decoder_hidden = nn.Dense(self.hidden)
        self.decoder_out = nn.Dense(_DATA_DIM)
        self.prior_log_scale = self.param('prior_log_scale', nn.initializers.zeros, ())

    @property
    def latent_shapes(self):
        return {'z': (self.latent_dim,)}

    _q = TinyNNXVAE._q
    _logits = TinyNNXVAE._logits
    sample_posterior = TinyNNXVAE.sample_posterior
    log_posterior = TinyNNXVAE.log_posterior
    log_likelihood = TinyNNXVAE.log_likelihood

    def log_prior(self, z, y=None, train=False):
        scale = jnp.full(z['z'].shape, jnp.exp(self.prior_log_scale))
        return _normal_log_prob(z['z'], 0.0, scale)


class TinyNNXBatchNormVAE(TinyNNXVAE):
    """`TinyNNXVAE` with BatchNorm (pooled over the library's vmapped 'batch' axis) after the
    encoder's hidden layer: its running statistics are the 'batch_stats' collection."""

    def __init__(self, latent_dim: int = 2, hidden: int = 8, *, rngs: nnx.Rngs):
        super().__init__(latent_dim, hidden, rngs=rngs)
        self.norm = nnx.BatchNorm(hidden, momentum=0.5, axis_name='batch', rngs=rngs)

    def _q_train(self, x, train):
        h = self.norm(self.encoder_hidden(x.reshape(-1))[None], use_running_average=not train)
        h = self.encoder_out(jnp.tanh(h[0]))
        return h[: self.latent_dim], jax.nn.softplus(h[self.latent_dim :]) + 1e-4

    def sample_posterior(self, x, noise, y=None, train=False):
        loc, scale = self._q_train(x, train)
        return {'z': loc[None] + scale[None] * noise['z']}

    def log_posterior(self, x, z, y=None, train=False):
        loc, scale = self._q_train(x, train)
        return _normal_log_prob(z['z'], loc[None], scale[None])


def _config(num_train_steps=6):
    config = test_config.get_config()
    config.num_train_steps = num_train_steps
    config.input.binarize = 'dynamic'
    config.model.module = 'nnx_models_test:TinyNNXVAE'
    config.model.module_kwargs = ml_collections.ConfigDict(dict(latent_dim=2))
    return config


def _python_config(num_train_steps=6):
    """`_config` for a model passed from Python (no import path)."""
    config = _config(num_train_steps)
    config.model.module = None
    config.model.module_kwargs = ml_collections.ConfigDict()
    return config


def _loss_and_grads(parts, params, key, images, labels):
    def loss(params):
        terms, _ = steps.batch_terms(
            params,
            {},
            key,
            images,
            labels,
            jnp.float32(1.0),
            apply_fn=parts.model.apply,
            static=parts.static,
            train=True,
        )
        return jnp.mean(terms['loss'])

    return jax.jit(jax.value_and_grad(loss))(params)


class NNXAsLinenTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('elbo', 'elbo', 'reparam'),
        ('iwae_reparam', 'iwae', 'reparam'),
        ('iwae_dreg', 'iwae', 'dreg'),
    )
    def test_same_loss_and_gradients_as_the_same_linen_network(self, objective, estimator):
        config = _python_config()
        config.objective = objective
        config.k_samples = 4
        config.gradient_estimator = estimator
        nnx_parts = build.build(config, model=TinyNNXVAE(rngs=nnx.Rngs(params=3)))
        linen_parts = build.build(config, model=TinyLinenVAE())
        self.assertIsInstance(nnx_parts.model, nnx_models.NNXModel)
        self.assertEqual(nnx_parts.static, linen_parts.static)
        params = nnx_parts.model.init(jax.random.key(0))['params']
        linen_params = models.init_variables(linen_parts.model, jax.random.key(0), (8, 8, 1), False)
        # The same tree (names and shapes), so the NNX values drop into the Linen model.
        self.assertEqual(
            jax.tree.map(jnp.shape, params), jax.tree.map(jnp.shape, linen_params['params'])
        )
        train = data.get_datasets(config.input)[0]
        spec = input_transform.spec_from(config.input, train['image'])
        images = input_transform.to_model_input(train['image'][:16], spec)
        labels = jnp.asarray(train['label'][:16])
        key = jax.random.key(7)
        loss, grads = _loss_and_grads(nnx_parts, params, key, images, labels)
        linen_loss, linen_grads = _loss_and_grads(linen_parts, params, key, images, labels)
        self.assertTrue(np.isfinite(loss))
        np.testing.assert_allclose(loss, linen_loss, rtol=1e-6)
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6), grads, linen_grads
        )
        # The comparison can fail: one changed weight changes the loss.
        moved = jax.tree.map(lambda a: a, params)
        moved['decoder_out']['bias'] = moved['decoder_out']['bias'] + 0.1
        self.assertNotAlmostEqual(
            float(_loss_and_grads(linen_parts, moved, key, images, labels)[0]), float(loss), 3
        )

    def test_capabilities_and_parameters_by_path_follow_the_seed(self):
        model = models.create_model(_config().model, (8, 8, 1), 'elbo')
        self.assertEqual(repr(model), 'NNXModel(TinyNNXVAE)')
        caps = protocol.capabilities(model)
        self.assertTrue(caps.sample_prior and caps.decode_mean)
        self.assertFalse(caps.one_pass_posterior or caps.distributions)
        init_key = build.root_keys(0)[0]
        first, again = model.init(init_key), model.init(init_key)
        jax.tree.map(np.testing.assert_array_equal, first, again)
        # The Python-built module with the run's rngs holds the same parameters.
        by_hand = nnx.state(TinyNNXVAE(latent_dim=2, rngs=build.nnx_rngs(0)), nnx.Param)
        jax.tree.map(np.testing.assert_array_equal, first['params'], nnx.to_pure_dict(by_hand))
        other = model.init(build.root_keys(1)[0])
        self.assertFalse(
            np.array_equal(
                first['params']['encoder_hidden']['kernel'],
                other['params']['encoder_hidden']['kernel'],
            )
        )
        with self.assertRaisesRegex(TypeError, r"method='decode_mean'"):
            model.decode_mean({'z': jnp.zeros((1, 2))})

    def test_batch_norm_statistics_are_carried_as_batch_stats(self):
        config = _config()
        config.model.module = 'nnx_models_test:TinyNNXBatchNormVAE'
        run = trainer.Run(config)
        state = run.create_train_state()
        self.assertEqual(set(state.batch_stats['norm']), {'mean', 'var'})
        images = input_transform.to_model_input(run.train_data['image'][:16], run.input_spec)
        labels = jnp.asarray(run.train_data['label'][:16])
        train_step = jax.jit(functools.partial(steps.train_step, static=run.static))
        new_state, metrics = train_step(state, images, labels, run.loop_key, jnp.float32(1.0))
        self.assertTrue(np.isfinite(metrics['loss']))
        # Updated from the batch (momentum 0.5): away from their initial 0 and 1.
        self.assertFalse(np.allclose(new_state.batch_stats['norm']['mean'], 0.0))
        self.assertFalse(np.allclose(new_state.batch_stats['norm']['var'], 1.0))
        # Evaluation uses the running statistics: different statistics, different scores.
        x, noise = images[0], {'z': jnp.zeros((1, 2))}
        scores = [
            run.model.apply(
                {'params': state.params, 'batch_stats': stats}, x, noise, method='log_posterior'
            )
            for stats in (state.batch_stats, new_state.batch_stats)
        ]
        self.assertFalse(np.allclose(*scores))

    def test_a_module_keeping_rngs_is_refused(self):
        class KeepsRngs(TinyNNXVAE):
            def __init__(self, *, rngs):
                super().__init__(rngs=rngs)
                self.rngs = rngs

        with self.assertRaisesRegex(ValueError, r'no randomness.*do not keep nnx.Rngs'):
            models.check_model(KeepsRngs(rngs=nnx.Rngs(0)), (8, 8, 1), False)


class NNXTrainingTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
        cls.workdir = cls.root / 'by_path'
        cls.result = trainer.train_and_evaluate(_config(), cls.workdir)

    def test_trains_by_import_path_and_from_python_with_the_same_result(self):
        self.assertEqual(self.result['step'], 6)
        for name in ('elbo', 'iwae_k1', 'iwae_k4'):
            self.assertTrue(np.isfinite(self.result[name]), name)
        config = _python_config()
        module = TinyNNXVAE(latent_dim=2, rngs=build.nnx_rngs(config.seed))
        by_python = trainer.train_and_evaluate(config, self.root / 'by_python', model=module)
        for name in ('elbo', 'recon', 'kl', 'iwae_k1', 'iwae_k4'):
            self.assertEqual(by_python[name], self.result[name], name)
        # A model passed from Python is not recorded in the run: read its checkpoint directly.
        template = trainer.Run(config, model=module).create_train_state()
        state = checkpoints.load(self.root / 'by_python', template)[0]
        jax.tree.map(
            np.testing.assert_array_equal,
            state.params,
            trained.load(self.workdir).variables['params'],
        )
        # The module passed in keeps its own parameters (the run trained copies).
        self.assertEqual(float(module.prior_log_scale[...]), 0.0)

    def test_stopped_and_resumed_run_is_bit_identical(self):
        workdir = self.root / 'resumed'
        stopped = trainer.train_and_evaluate(_config(), workdir, stop_at_step=3)
        self.assertEqual(stopped['step'], 3)
        resumed = trainer.train_and_evaluate(_config(), workdir)
        self.assertEqual(resumed['step'], 6)
        for name in ('elbo', 'iwae_k1', 'iwae_k4'):
            self.assertEqual(resumed[name], self.result[name], name)
        a, b = trained.load(workdir), trained.load(self.workdir)
        jax.tree.map(np.testing.assert_array_equal, a.variables, b.variables)

    def test_sweep_of_two_seeds_trains_each_model_from_its_own_parameters(self):
        config = _config()
        config.sweep.seed = '0,1'
        results = sweep.train_and_evaluate(config, self.root / 'sweep')
        self.assertEqual(set(results), {'beta=1,seed=0', 'beta=1,seed=1'})
        for result in results.values():
            self.assertEqual(result['step'], 6)
            self.assertTrue(np.isfinite(result['elbo']))
        seed0 = trained.load(self.root / 'sweep' / 'beta=1,seed=0')
        seed1 = trained.load(self.root / 'sweep' / 'beta=1,seed=1')
        k0, k1 = (m.variables['params']['encoder_hidden']['kernel'] for m in (seed0, seed1))
        self.assertFalse(np.array_equal(k0, k1))
        # The sweep's seed-0 model is the separate seed-0 run (vmapped: equal to rounding).
        np.testing.assert_allclose(results['beta=1,seed=0']['elbo'], self.result['elbo'], rtol=1e-5)

    def test_load_in_a_fresh_process_reproduces_the_evaluated_nll(self):
        workdir = self.root / 'loaded'
        shutil.copytree(self.workdir, workdir)
        result = evaluate.evaluate(
            workdir, k_samples=K, max_examples=NUM_EXAMPLES, pictures=False, progress=False
        )
        # The evaluation is less precise than the trainer's (fewer examples): its own file.
        self.assertEqual(json.loads(Path(result['results_file']).read_text())['nll'], result['nll'])
        stored = data.get_datasets(_config().input)[1]['image']
        spec = input_transform.spec_from(_config().input, stored)
        images = np.asarray(input_transform.to_model_input(stored[:NUM_EXAMPLES], spec))
        npz = self.root / 'examples.npz'
        np.savez(npz, images=images)
        script = (
            'import json, sys\n'
            'import jax\n'
            "jax.config.update('jax_disable_most_optimizations', True)\n"
            'import numpy as np, vae_jax\n'
            'model = vae_jax.load(sys.argv[1])\n'
            'x = np.load(sys.argv[2])["images"]\n'
            'log_px = model.log_likelihood(model.eval_key, x, int(sys.argv[3]))\n'
            'samples = model.sample(jax.random.key(0), 3)\n'
            "print(json.dumps({'nll': float(-np.mean(log_px)), 'samples': samples.shape}))\n"
        )
        env = dict(os.environ, JAX_PLATFORMS='cpu')
        env['PYTHONPATH'] = os.pathsep.join([str(REPO / 'tests'), str(REPO)])
        proc = subprocess.run(
            [sys.executable, '-c', script, str(workdir), str(npz), str(K)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        np.testing.assert_allclose(out['nll'], result['nll'], rtol=1e-6)
        self.assertEqual(out['samples'], [3, 8, 8, 1])
        # The trainer drew the pictures that decode_mean and sample_prior allow.
        for name in ('reconstructions', 'samples', 'manifold'):
            self.assertTrue((workdir / 'images' / f'{name}.png').is_file(), name)


if __name__ == '__main__':
    absltest.main()
