"""Every experiment config: loads, locks, builds its model, and trains a few steps on its data.

Real data sets are read from the prepared TFDS copy (`$TFDS_DATA_DIR`, else ../shared/data/tfds
beside the repository), truncated to a few hundred images; a test that needs one skips, saying
where it looked, when it is absent. Conv compiles dominate the time, so each config compiles
one `train_step` and reuses it, and the BatchNorm and CVAE checks reuse those trained states.
"""

import functools
import importlib
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from configs import default, zoo
from vae_jax import (
    aux_networks,
    config_validation,
    data,
    evaluation,
    input_transform,
    models,
    run_eval,
    steps,
    trained,
    trainer,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG_NAMES = sorted(p.stem for p in (REPO / 'configs').glob('*.py') if p.stem != '__init__')
# ../shared/data/tfds: where CI's clone finds the prepared copies.
DATA_DIR = Path(os.environ.get('TFDS_DATA_DIR') or REPO.parent / 'shared' / 'data' / 'tfds')
NUM_TRAIN = 256
NUM_TEST = 16
NUM_STEPS = 3


def _get_config(name):
    return importlib.import_module(f'configs.{name}').get_config()


def _flat_keys(config, prefix=''):
    out = set()
    for k, v in config.items():
        if hasattr(v, 'items'):
            out |= _flat_keys(v, f'{prefix}{k}.')
        else:
            out.add(f'{prefix}{k}')
    return out


def _skip_without_data(test, config):
    name = config.input.dataset
    if name in data.TFDS_DATASETS and not (DATA_DIR / name).is_dir():
        test.skipTest(
            f'{name!r} is not prepared in {DATA_DIR} (set $TFDS_DATA_DIR to a TFDS data dir '
            'holding it; see the README, "Where the data comes from")'
        )


def _small_config(name):
    """The config with truncated data and a small test split."""
    config = _get_config(name)
    config.input.data_dir = str(DATA_DIR)
    config.input.num_train_examples = NUM_TRAIN
    config.input.num_test_examples = NUM_TEST
    config.input.toy_num_examples = NUM_TRAIN
    config.input.batch_size = min(config.input.batch_size, 32)
    return config


@functools.cache
def _trained(name):
    """(run, states after 0..NUM_STEPS train steps, per-step metrics), one compile per config."""
    config = _small_config(name)
    run = trainer.Run(config)
    # A jitted init: eager Flax init dispatches (and compiles) op by op, slow for conv models.
    use_labels = bool(config.model.use_labels)
    variables = jax.jit(
        lambda key: models.init_variables(run.model, key, run.data_shape, use_labels)
    )(run.init_key)
    state = steps.TrainState.create(
        apply_fn=run.model.apply,
        params=variables['params'],
        tx=run.tx,
        batch_stats=variables.get('batch_stats', {}),
        aux=aux_networks.init(run.init_key, run.static),  # FactorVAE's discriminator; else {}
    ).replace(step=jnp.zeros((), jnp.int32))
    train_step = jax.jit(functools.partial(steps.train_step, static=run.static))
    images = input_transform.to_model_input(run.train_data['image'], run.input_spec)
    labels = jnp.asarray(run.train_data['label'])
    batch = config.input.batch_size
    beta = jnp.asarray(config.beta, jnp.float32)
    states, metrics = [jax.device_get(state)], []
    for i in range(NUM_STEPS):
        rows = slice(i * batch, (i + 1) * batch)
        state, m = train_step(state, images[rows], labels[rows], run.loop_key, beta)
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(m))
    return run, states, metrics


def _model(run, state):
    return trained.TrainedModel(run.parts, run.variables(state), int(state.step))


class ConfigFilesTest(parameterized.TestCase):
    def test_every_config_is_tested(self):
        self.assertContainsSubset(
            {'default', 'test', 'iwae_mnist', 'fashion_conv_cb', 'mnist_cvae'}, CONFIG_NAMES
        )

    @parameterized.named_parameters((n, n) for n in CONFIG_NAMES)
    def test_loads_locks_validates_and_builds(self, name):
        config = _get_config(name)
        # Every key lives in default.py: a config only changes values (the keyword arguments of
        # a model.module are the module's own).
        keys = {k for k in _flat_keys(config) if not k.startswith('model.module_kwargs.')}
        self.assertEqual(keys, _flat_keys(default.get_config()))
        config.lock()
        with self.assertRaises(AttributeError):
            config.betta = 4.0
        config_validation.validate(config)
        data_shape = data.data_shape(config.input)
        model = models.create_model(config.model, data_shape, config.objective)
        variables = jax.eval_shape(
            lambda: models.init_variables(
                model, jax.random.key(0), data_shape, bool(config.model.use_labels)
            )
        )
        static = steps.StepConfig.from_config(config, data_shape, model)
        self.assertIsInstance(model, models.LatentVariableModel)
        self.assertTrue(static.latent_shapes)
        if config.model.module is not None:  # a protocol model: its own parameters
            return
        self.assertTrue(static.distributions)  # the built-in VAE's one-layer capability
        extra = {'standard_normal': set(), 'mog': {'prior_mixture'}, 'vamp': {'pseudo_inputs'}}
        expected = {'encoder', 'decoder'} | extra[config.model.prior.name]
        self.assertEqual(set(variables['params']), expected)
        z = {'z': jax.ShapeDtypeStruct((5, config.model.latent_dim), jnp.float32)}
        y = jnp.zeros((), jnp.int32) if config.model.use_labels else None
        px = jax.eval_shape(lambda v, z: model.apply(v, z, y, method='decode_mean'), variables, z)
        self.assertEqual(px.shape, (5, *data_shape))

    def test_docstrings_name_command_and_result(self):
        for name in CONFIG_NAMES:
            if name in ('default', 'test'):
                continue
            doc = importlib.import_module(f'configs.{name}').__doc__
            # A docstring says what it trains, the exact command (naming the file), the result.
            self.assertIn(f'configs/{name}.py', doc, name)
            self.assertRegex(doc, r'Measured|Expected', name)
            self.assertNotIn('RESULT_', doc, f'{name}: result placeholder not filled in')


class TrainOnDataTest(parameterized.TestCase):
    @parameterized.named_parameters((n, n) for n in CONFIG_NAMES)
    def test_a_few_steps_give_finite_metrics_and_data_shaped_outputs(self, name):
        _skip_without_data(self, _get_config(name))
        run, states, metrics = _trained(name)
        self.assertEqual(int(states[-1].step), NUM_STEPS)
        for m in metrics:
            for k, v in m.items():
                self.assertTrue(np.isfinite(v), f'{name}: {k}={v}')
        changed = jax.tree.map(
            lambda a, b: not np.array_equal(a, b), states[0].params, states[-1].params
        )
        self.assertTrue(all(jax.tree.leaves(changed)), f'{name}: a parameter did not move')
        images, labels = run.eval_split()
        result = evaluation.evaluate_dataset(
            run.eval_key,
            images,
            labels,
            variables=run.variables(states[-1]),
            model_fn=run.parts.model_fn,
            k_list=(2,),
            nll_k=8,
            dynamic_binarize=run.static.dynamic_binarize,
            input_spec=run.input_spec,
        )
        if run.config.objective != 'autoencoder':
            for key in ('elbo', 'iwae_k2', 'nll'):
                self.assertTrue(np.isfinite(result[key]), f'{name}: {key}={result[key]}')
        if not run.static.distributions:  # active units per stochastic layer
            for layer, _ in run.static.latent_shapes:
                self.assertIn(f'active_units/{layer}', result)
        model = _model(run, states[-1])
        if not model.capabilities.decode_mean:  # no decoder to draw with
            return
        y = labels if run.static.use_labels else None
        images = np.asarray(input_transform.to_model_input(images, run.input_spec))
        recon = model.reconstruct(images, y)
        self.assertEqual(recon.shape, images.shape)
        self.assertTrue(np.all(np.isfinite(recon)))
        if run.config.model.likelihood != 'gaussian':
            self.assertTrue(np.all((recon >= 0) & (recon <= 1)))

    def test_autoencoder_config_runs_end_to_end(self):
        # The trainer path (chunks, eval, pictures, summary line) with a code that has no ELBO.
        config = _small_config('mnist_autoencoder')
        _skip_without_data(self, config)
        config.num_train_steps = 2
        config.steps_per_call = 2
        config.log_every_steps = 2
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        workdir = Path(self.create_tempdir().full_path)
        result = trainer.train_and_evaluate(config, workdir)
        self.assertEqual(result['step'], 2)
        self.assertIsNone(result['elbo'])
        self.assertTrue(np.isfinite(result['recon']))
        self.assertTrue(np.isfinite(result['recon_error']))
        self.assertTrue((workdir / 'images' / 'reconstructions.png').is_file())


class BatchNormTest(absltest.TestCase):
    """fashion_conv_cb through steps.train_step: stats move in training, not in evaluation."""

    def setUp(self):
        super().setUp()
        _skip_without_data(self, _get_config('fashion_conv_cb'))
        self.run, self.states, _ = _trained('fashion_conv_cb')

    def test_running_stats_change_during_training(self):
        first, last = self.states[0].batch_stats, self.states[-1].batch_stats
        self.assertEqual(set(first), {'encoder', 'decoder'})
        for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(last), strict=True):
            self.assertFalse(np.allclose(a, b))
        # Every step moves them.
        for before, after in zip(self.states[:-1], self.states[1:], strict=True):
            mean_before = before.batch_stats['encoder']['BatchNorm_0']['mean']
            mean_after = after.batch_stats['encoder']['BatchNorm_0']['mean']
            self.assertFalse(np.allclose(mean_before, mean_after))

    def test_first_step_pools_statistics_over_the_whole_batch(self):
        # new = m * old + (1 - m) * statistic of the first conv's output over the whole batch
        # (the per-example vmap pools over axis 'batch'; per-example variances would differ).
        m = self.run.config.model.batch_norm_momentum
        x = self.run.train_data['image'][: self.run.config.input.batch_size]
        x = input_transform.to_model_input(x, self.run.input_spec)
        conv = self.states[0].params['encoder']['Conv_0']
        h = (
            jax.lax.conv_general_dilated(
                jnp.asarray(x),
                conv['kernel'],
                (1, 1),
                'SAME',
                dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
            )
            + conv['bias'][None, None, None]
        )
        h = np.asarray(h, np.float64)
        old = self.states[0].batch_stats['encoder']['BatchNorm_0']
        new = self.states[1].batch_stats['encoder']['BatchNorm_0']
        tight = dict(rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            new['mean'], m * old['mean'] + (1 - m) * h.mean((0, 1, 2)), **tight
        )
        np.testing.assert_allclose(new['var'], m * old['var'] + (1 - m) * h.var((0, 1, 2)), **tight)

    def test_running_stats_are_used_and_kept_in_evaluation(self):
        state = self.states[-1]
        images, labels = self.run.eval_split()
        images = input_transform.to_model_input(images, self.run.input_spec)  # [16, 28, 28, 1]
        labels = jnp.asarray(labels)
        eval_terms = jax.jit(
            functools.partial(
                steps.batch_terms, apply_fn=state.apply_fn, static=self.run.static, train=False
            )
        )
        key = jax.random.key(0)
        terms, stats = eval_terms(state.params, state.batch_stats, key, images, labels, 1.0)
        jax.tree.map(np.testing.assert_array_equal, stats, state.batch_stats)
        self.assertTrue(np.all(np.isfinite(terms['loss'])))
        # Running statistics make evaluation per-example: an example's reconstruction does not
        # depend on the rest of the batch (with batch statistics it would).
        model = _model(self.run, state)
        recon = model.reconstruct(images)
        blanked = images.at[8:].set(0.0)  # same shape, no recompile; other batch statistics
        recon_blanked = model.reconstruct(blanked)
        np.testing.assert_allclose(recon_blanked[:8], recon[:8], rtol=1e-4, atol=1e-5)
        self.assertEqual(recon.shape, images.shape)


class ConditionalTest(absltest.TestCase):
    def test_decoding_a_fixed_z_depends_on_the_label(self):
        _skip_without_data(self, _get_config('mnist_cvae'))
        run, states, _ = _trained('mnist_cvae')
        model = _model(run, states[-1])
        z = jax.random.normal(jax.random.key(3), (10, run.config.model.latent_dim))
        same_z = jnp.broadcast_to(z[:1], z.shape)
        digits = jnp.arange(10, dtype=jnp.int32)
        images = model.decode_mean(same_z, digits)  # [10, 28, 28, 1]
        self.assertEqual(images.shape, (10, 28, 28, 1))
        for c in range(1, 10):
            self.assertGreater(float(jnp.abs(images[c] - images[0]).max()), 1e-4, c)
        # A fixed label gives the same image for the same z, whatever else is in the batch.
        again = model.decode_mean(z, jnp.zeros(10, jnp.int32))
        np.testing.assert_allclose(again[0], images[0], rtol=1e-5, atol=1e-6)
        decoded = model.decode(z[:1], jnp.asarray(4, jnp.int32)).mean()
        np.testing.assert_allclose(decoded[0], images[4], rtol=1e-5, atol=1e-6)


class ZooConfigsTest(parameterized.TestCase):
    """configs/zoo.py:<model>: each validates and trains a few steps with finite metrics."""

    @parameterized.named_parameters((m, m) for m in zoo.MODELS)
    def test_trains_a_few_steps_with_finite_metrics(self, model):
        config = zoo.get_config(model)
        _skip_without_data(self, config)
        config.input.data_dir = str(DATA_DIR)
        config.input.num_train_examples = NUM_TRAIN
        config.input.num_test_examples = NUM_TEST
        config.lock()
        run = trainer.Run(config)
        state = run.create_train_state()
        start = jax.device_get(state.params)
        train_step = jax.jit(functools.partial(steps.train_step, static=run.static))
        images = input_transform.to_model_input(run.train_data['image'], run.input_spec)
        labels = jnp.asarray(run.train_data['label'])
        batch = config.input.batch_size
        for i in range(NUM_STEPS):
            rows = slice(i * batch, (i + 1) * batch)
            state, metrics = train_step(
                state, images[rows], labels[rows], run.loop_key, jnp.float32(config.beta)
            )
            for k, v in jax.device_get(metrics).items():
                self.assertTrue(np.isfinite(v), f'{model} step {i}: {k}={v}')
        self.assertEqual(int(state.step), NUM_STEPS)
        moved = jax.tree.map(
            lambda a, b: not np.array_equal(a, b), start, jax.device_get(state.params)
        )
        self.assertTrue(all(jax.tree.leaves(moved)), f'{model}: a parameter did not move')
        # The objective's terms on held-out data (eval.json): two batches in evaluation mode.
        held_out = run_eval.objective_terms(
            run.parts,
            run.variables(state),
            run.eval_key,
            np.asarray(images[-2 * batch :]),
            np.asarray(labels[-2 * batch :]),
        )
        self.assertIn('objective/loss', held_out)
        self.assertTrue(all(np.isfinite(v) for v in held_out.values()), held_out)
        if config.objective in ('iwae', 'miwae', 'ciwae', 'piwae'):
            self.assertBetween(float(metrics['ess']), 1.0 - 1e-4, config.k_samples + 1e-4)
            self.assertIn('objective/ess', held_out)
        if config.objective == 'beta_tcvae':
            for name in ('mi', 'tc', 'dwkl'):
                self.assertIn(name, metrics)
            np.testing.assert_allclose(
                metrics['mi'] + metrics['tc'] + metrics['dwkl'], metrics['kl'], rtol=1e-4
            )
            for name in ('mi', 'tc', 'dwkl'):
                self.assertIn(f'objective/{name}', held_out)

    def test_unknown_model_names_the_allowed_ones(self):
        with self.assertRaisesRegex(ValueError, 'configs/zoo.py:vq_vae.*miwae'):
            zoo.get_config('vq_vae')


if __name__ == '__main__':
    absltest.main()
