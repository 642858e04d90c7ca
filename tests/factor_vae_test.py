"""Tests for FactorVAE (vae_jax/factor_vae.py) and auxiliary networks in the train state.

- The objective's batch terms against the ELBO's per-example terms and a discriminator whose
  logit difference is known, on the linear-Gaussian toy model of disentangle_vaes_test.
- The discriminator's density-ratio estimate of the total correlation of a 3-D Gaussian, trained
  by the library's own auxiliary-network step (`aux_networks.update`), against the closed form
  TC = -0.5 log det R.
- Runs on the embedded digits data (configs/test.py, a tiny discriminator): stopped and resumed
  equals uninterrupted bit for bit, model and discriminator and both optimizer states; a
  checkpoint without the group, or with another one, is refused with one message; every other
  objective's train state has no group.
"""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from configs import test as test_config
from tests import disentangle_vaes_test as toy
from vae_jax import (
    aux_networks,
    build,
    checkpoints,
    config_validation,
    disentangle_objectives,
    factor_vae,
    k_sweep,
    objectives,
    optim,
    steps,
    sweep,
    trainer,
)


def _config(objective='factor_vae', **values):
    config = test_config.get_config()
    config.objective = objective
    if objective == 'factor_vae':
        config.factor_discriminator_layers = 2
        config.factor_discriminator_width = 16
    for key, value in values.items():
        config[key] = value
    return config


def _state(config):
    parts = build.build(config, (8, 8, 1), dataset_size=100)
    tx = optim.create_optimizer(config.optim, steps_per_epoch=1, num_train_steps=10)
    return build.create_train_state(parts, build.root_keys(config.seed)[0], tx)


def _load(workdir, config):
    return checkpoints.load(Path(workdir), trainer.Run(config).create_train_state())


def _arrays(state):
    """A train state's arrays, without its static members (each run's own optimizer object)."""
    names = ('step', 'params', 'opt_state', 'batch_stats', 'aux')
    return {name: getattr(state, name) for name in names}


class ObjectiveTest(parameterized.TestCase):
    def test_batch_terms_are_the_elbo_plus_gamma_times_the_discriminators_estimate(self):
        weights = jnp.asarray([0.5, -1.0, 2.0], jnp.float32)

        def discriminator(codes):  # logit_0 - logit_1 = codes . weights, known
            return jnp.stack([codes @ weights, jnp.zeros(codes.shape[0])], axis=-1)

        fn = jax.jit(
            lambda keys, beta: factor_vae.model_factor_vae(
                keys, toy._bind(), toy._XS, None, beta=beta,
                aux={'discriminator': discriminator}, factor_gamma=3.0,
            )
        )  # fmt: skip
        terms, handed = fn(toy._KEYS, 0.5)
        recon, kl = toy._elbo_terms()
        np.testing.assert_allclose(terms['recon'], recon, rtol=1e-5)
        np.testing.assert_allclose(terms['kl'], kl, rtol=1e-5)
        # The codes are the ELBO's own draws: z = mean + std * eps with the same keys.
        codes = np.stack(
            [
                np.asarray(toy._bind()(x, None).sample(k, 1)[0])
                for k, x in zip(toy._KEYS, toy._XS, strict=True)
            ]
        )
        np.testing.assert_allclose(handed['discriminator'], codes, rtol=1e-5, atol=1e-6)
        tc = np.mean(codes @ np.asarray(weights))
        self.assertGreater(abs(tc), 0.1)  # a term the check below can see
        np.testing.assert_allclose(terms['tc'], np.full(toy._B, tc), rtol=1e-5)
        np.testing.assert_allclose(
            np.mean(terms['loss']), np.mean(recon) + 0.5 * np.mean(kl) + 3.0 * tc, rtol=1e-5
        )
        # Without a discriminator (evaluation): the ELBO's terms only.
        plain, _ = factor_vae.model_factor_vae(toy._KEYS, toy._bind(), toy._XS, None)
        self.assertEqual(set(plain), {'recon', 'kl', 'elbo'})

    def test_tc_gradient_reaches_the_encoder_and_the_handed_codes_are_stopped(self):
        def discriminator(codes):
            return jnp.stack([jnp.sum(codes**2, -1), jnp.zeros(codes.shape[0])], axis=-1)

        def tc(params):
            terms, _ = factor_vae.model_factor_vae(
                toy._KEYS, toy._bind(params), toy._XS, None, aux={'discriminator': discriminator}
            )
            return jnp.mean(terms['tc'])

        def handed(params):
            _, out = factor_vae.model_factor_vae(toy._KEYS, toy._bind(params), toy._XS, None)
            return jnp.sum(out['discriminator'])

        grads = jax.grad(tc)(toy._PARAMS)
        self.assertGreater(float(jnp.abs(grads['A']).sum()), 0.0)
        self.assertGreater(float(jnp.abs(grads['s']).sum()), 0.0)  # through the reparam. draw
        self.assertEqual(float(jnp.abs(grads['W']).sum()), 0.0)  # the decoder has no part in it
        for leaf in jax.tree.leaves(jax.grad(handed)(toy._PARAMS)):
            self.assertEqual(float(jnp.abs(leaf).sum()), 0.0)

    def test_discriminator_loss_uses_the_first_half_against_the_permuted_second(self):
        codes = jnp.arange(10.0, dtype=jnp.float32).reshape(5, 2)  # odd: the last row left out
        seen = []

        def apply(z):
            seen.append(z)
            return jnp.zeros((z.shape[0], 2))

        loss, metrics = factor_vae.discriminator_step_loss(jax.random.key(0), apply, codes)
        np.testing.assert_array_equal(seen[0], codes[:2])
        for column in range(2):  # each dimension permuted within the second half's rows 2, 3
            self.assertCountEqual(np.asarray(seen[1][:, column]), np.asarray(codes[2:4, column]))
        np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)  # equal logits: log 2
        self.assertEqual(float(metrics['discriminator_loss']), float(loss))

    def test_registered_with_its_discriminator_and_options(self):
        objective = objectives.get('factor_vae')
        self.assertEqual([n.name for n in objective.aux], ['discriminator'])
        keys = [o.key for o in objective.all_options]
        self.assertEqual(
            keys,
            [
                'factor_gamma',
                'factor_discriminator_layers',
                'factor_discriminator_width',
                'factor_discriminator_learning_rate',
                'factor_discriminator_b1',
                'factor_discriminator_b2',
            ],
        )
        static = steps.StepConfig.from_config(
            _config(factor_discriminator_learning_rate=1e-3), (8, 8, 1)
        )
        self.assertEqual(
            static.aux_options,
            (
                (
                    'discriminator',
                    (('layers', 2), ('width', 16)),
                    (('learning_rate', 1e-3), ('b1', 0.5), ('b2', 0.9)),
                ),
            ),
        )

    @parameterized.named_parameters(
        (
            'option_under_another_objective',
            {'objective': 'elbo', 'factor_gamma': 10.0},
            r"factor_gamma=10\.0 applies only when objective='factor_vae'",
        ),
        (
            'discriminator_option_under_another_objective',
            {'objective': 'elbo', 'factor_discriminator_width': 8},
            r"factor_discriminator_width=8 applies only when objective='factor_vae'",
        ),
        ('zero_width', {'factor_discriminator_width': 0}, r'width=0 is invalid.*>= 1'),
        ('b1_of_one', {'factor_discriminator_b1': 1.0}, r'b1=1\.0 is invalid.*\[0, 1\)'),
        ('small_batch', {'input.batch_size': 2}, r'batch_size=2: factor_vae.*>= 4'),
    )
    def test_bad_config_names_key_value_and_what_is_allowed(self, values, pattern):
        config = _config(values.get('objective', 'factor_vae'))
        for key, value in values.items():
            *parents, leaf = key.split('.')
            node = config
            for parent in parents:
                node = node[parent]
            node[leaf] = value
        with self.assertRaisesRegex(ValueError, pattern):
            config_validation.validate(config)

    def test_a_train_state_without_its_discriminator_is_refused(self):
        config = _config()
        static = build.build(config, (8, 8, 1)).static
        state = _state(config).replace(aux={})
        images, labels = jnp.zeros((16, 8, 8, 1)), jnp.zeros((16,), jnp.int32)
        with self.assertRaisesRegex(
            ValueError, r"trains the auxiliary networks \['discriminator'\], but the train state"
        ):
            steps.train_step(state, images, labels, jax.random.key(0), 1.0, static=static)

    def test_the_k_sweep_refuses_it_naming_key_and_value(self):
        # Its rows share one masked ELBO/IWAE objective: no room for a discriminator.
        with self.assertRaisesRegex(
            ValueError, r"row 'r': config\.objective='factor_vae'; allowed: \('elbo', 'iwae'\)"
        ):
            k_sweep.check_row(_config(), 'r')

    def test_a_model_with_two_latent_layers_is_refused(self):
        config = _config()
        config.model.module = 'vae_jax.two_layer:TwoLayerVAE'
        with self.assertRaisesRegex(ValueError, r"factor_vae' needs a model whose latent is one"):
            build.build(config, (8, 8, 1))


# A 3-D Gaussian with a full correlation matrix: TC = -0.5 log det R (nats).
_R3 = np.array([[1.0, 0.8, 0.4], [0.8, 1.0, 0.6], [0.4, 0.6, 1.0]])
_TC3 = -0.5 * np.log(np.linalg.det(_R3))  # 0.748 (det R = 0.224)


class DensityRatioTest(parameterized.TestCase):
    @parameterized.named_parameters(('correlated', _R3, _TC3), ('independent', np.eye(3), 0.0))
    def test_discriminator_estimates_the_closed_form_total_correlation(self, corr, expected):
        # Trained by the library's own auxiliary step (`aux_networks.update`, the one the train
        # step runs) on codes drawn from N(0, R): class 0 the first half of each batch, class 1
        # the dimension-wise permuted second half. A 2 x 64 discriminator at Adam 1e-3 (the
        # paper's 6 x 1000 at 1e-4 needs thousands of steps), 400 steps of 512 codes.
        config = _config(factor_discriminator_width=64, factor_discriminator_learning_rate=1e-3)
        config.model.latent_dim = 3
        static = steps.StepConfig.from_config(config, (8, 8, 1))
        chol = jnp.asarray(np.linalg.cholesky(corr), jnp.float32)
        aux = aux_networks.init(jax.random.key(0), static)

        def body(aux, key):
            draw_key, step_key = jax.random.split(key)
            codes = jax.random.normal(draw_key, (512, 3)) @ chol.T
            aux, metrics = aux_networks.update(step_key, static, aux, {'discriminator': codes})
            return aux, metrics['discriminator_loss']

        train = jax.jit(lambda aux, keys: jax.lax.scan(body, aux, keys))
        aux, losses = train(aux, jax.random.split(jax.random.key(1), 400))
        self.assertTrue(np.all(np.isfinite(losses)))
        # The estimate on 20,000 fresh codes of q(z): its sampling error is ~0.01 nats, so the
        # tolerance, 0.12 nats (16% of the correlated TC), is the discriminator's own error
        # after 400 noisy steps; a sign error (-0.75) or a discriminator that learnt nothing
        # (0 where TC = 0.75) fails it.
        codes = jax.random.normal(jax.random.key(2), (20_000, 3)) @ chol.T
        apply = aux_networks.bind(static, aux)['discriminator']
        estimate = float(disentangle_objectives.total_correlation(apply(codes)))
        self.assertAlmostEqual(estimate, expected, delta=0.12)


class TrainStateTest(parameterized.TestCase):
    @pytest.mark.slow
    def test_stopped_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(self):
        config = _config()
        straight = self.create_tempdir().full_path
        trainer.train_and_evaluate(config, straight)
        resumed = self.create_tempdir().full_path
        trainer.train_and_evaluate(config, resumed, stop_at_step=6)
        trainer.train_and_evaluate(config, resumed)
        a, step_a = _load(straight, config)
        b, step_b = _load(resumed, config)
        self.assertEqual((step_a, step_b), (12, 12))
        # The whole state: VAE parameters, the discriminator's, and both optimizer states.
        self.assertEqual(list(a.aux), ['discriminator'])
        jax.tree.map(np.testing.assert_array_equal, _arrays(a), _arrays(b))
        self.assertEqual(int(a.aux['discriminator'].opt_state[0].count), 12)  # its own Adam
        # The discriminator trained: its parameters left their initial values.
        fresh = trainer.Run(config).create_train_state()
        moved = jax.tree.map(
            lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()),
            a.aux['discriminator'].params,
            fresh.aux['discriminator'].params,
        )
        self.assertTrue(all(v > 0 for v in jax.tree.leaves(moved)), moved)
        rows = [r for r in _train_rows(resumed) if 'train/tc' in r]
        self.assertEqual(rows, [r for r in _train_rows(straight) if 'train/tc' in r])
        self.assertLen(rows, 4)
        self.assertIn('train/discriminator_loss', rows[0])

    def test_checkpoint_without_the_discriminator_is_refused_with_one_message(self):
        workdir = self.create_tempdir().full_path
        trainer.train_and_evaluate(_config('elbo'), workdir, stop_at_step=6)
        with self.assertRaisesRegex(
            checkpoints.CheckpointMismatch,
            r'written by another model or train-state structure: the auxiliary network '
            r"'discriminator' \(state\.aux\['discriminator'\].*\) is not in the checkpoint\. "
            r'It is not damaged',
        ):
            _load(workdir, _config())
        other = self.create_tempdir().full_path
        trainer.train_and_evaluate(_config(), other, stop_at_step=6)
        with self.assertRaisesRegex(
            checkpoints.CheckpointMismatch, r"auxiliary network 'discriminator'.* is only in"
        ):
            _load(other, _config('elbo'))
        with self.assertRaisesRegex(
            checkpoints.CheckpointMismatch,
            r'aux/discriminator/params/Dense_0/kernel is \[2, 16\] in the checkpoint, \[2, 8\]',
        ):
            _load(other, _config(factor_discriminator_width=8))

    @pytest.mark.slow
    def test_a_run_checkpointed_before_auxiliary_networks_resumes_bit_identically(self):
        config = _config('elbo')
        straight = self.create_tempdir().full_path
        trainer.train_and_evaluate(config, straight)
        old = Path(self.create_tempdir().full_path)
        trainer.train_and_evaluate(config, old, stop_at_step=6)
        # Written again as the code before `aux` wrote it: a train state without the field, and
        # a config.json without the keys added since.
        state, _ = _load(old, config)
        shutil.rmtree(old / 'checkpoints' / '6')
        manager = checkpoints.checkpoint_manager(old, config.keep_checkpoints)
        fields = ('step', 'apply_fn', 'params', 'tx', 'opt_state', 'batch_stats')
        legacy = checkpoints._TrainStateWithoutAux(**{f: getattr(state, f) for f in fields})
        checkpoints.save(manager, 6, legacy)
        checkpoints.close(manager)
        stored = json.loads((old / 'config.json').read_text())
        stored = {k: v for k, v in stored.items() if not k.startswith('factor_')}
        (old / 'config.json').write_text(json.dumps(stored))
        trainer.train_and_evaluate(config, old)
        a, b = _load(straight, config)[0], _load(old, config)[0]
        jax.tree.map(np.testing.assert_array_equal, _arrays(a), _arrays(b))
        self.assertEqual(int(b.step), 12)

    def test_vectorised_sweep_carries_each_models_discriminator(self):
        root = Path(self.create_tempdir().full_path)
        short = dict(num_train_steps=6, eval_every_steps=6)  # one eval, at the end
        config = _config(**short)
        config.sweep.seed = '0,1'
        sweep.train_and_evaluate(config, root / 'vec')
        separate = _config(**short, seed=1)
        trainer.train_and_evaluate(separate, root / 'alone')
        vec, step = _load(root / 'vec' / 'beta=1,seed=1', separate)
        alone, _ = _load(root / 'alone', separate)
        self.assertEqual(step, 6)
        # Vmapped matmuls may sum in another order than unbatched ones (tests/sweep_test.py).
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
            _arrays(vec),
            _arrays(alone),
        )
        first, _ = _load(root / 'vec' / 'beta=1,seed=0', _config(**short))
        kernel = lambda s: np.asarray(s.aux['discriminator'].params['Dense_0']['kernel'])
        self.assertGreater(np.abs(kernel(first) - kernel(vec)).max(), 1e-3)  # its own network

    @parameterized.named_parameters(
        (name, name) for name in objectives.NAMES if not objectives.get(name).aux
    )
    def test_other_objectives_have_no_auxiliary_group(self, name):
        config = _config(name)
        state = _state(config)
        self.assertEqual(state.aux, {})
        paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)]
        self.assertFalse([p for p in paths if 'aux' in p])


def _train_rows(workdir):
    """metrics.jsonl's train/* values, without the wall-clock rate."""
    lines = (Path(workdir) / 'metrics.jsonl').read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [
        {k: v for k, v in r.items() if k.startswith('train/') and k != 'train/steps_per_sec'}
        for r in rows
    ]


if __name__ == '__main__':
    absltest.main()
