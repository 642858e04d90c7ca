"""Tests for vae_jax.disentangle_eval: metrics of a loaded model on dSprites."""

import json
import tempfile
from pathlib import Path
from unittest import mock

import jax
import numpy as np
import optax
from absl.testing import absltest

from configs import default as default_config
from configs import test as test_config
from vae_jax import (
    disentangle_eval,
    disentanglement,
    dsprites,
    evaluate,
    run_eval,
    run_files,
    trained,
    trainer,
)


def tiny_model(dataset='digits', latent_dim=3):
    """A built-in VAE at its initial parameters (the metrics do not need a trained one)."""
    config = default_config.get_config()
    config.input.dataset = dataset
    config.model.latent_dim = latent_dim
    config.model.encoder = 'dense(16)-relu'
    config.model.decoder = 'dense(16)-relu-dense(out)'
    config.model.likelihood = 'bernoulli'
    parts = trained.build(config)
    state = trained.create_train_state(parts, jax.random.key(0), optax.adam(1e-3))
    return trained.TrainedModel(parts, {'params': state.params}, 0)


_SMALL = dict(
    beta_vae_num_train=50, beta_vae_num_eval=50, beta_vae_batch_size=4,
    factor_vae_num_train=50, factor_vae_num_eval=50, factor_vae_batch_size=4,
    factor_vae_num_variance_estimate=200, mig_num_train=200,
    dci_num_train=200, dci_num_test=100, dci_regressor='lasso',
    sap_num_train=100, sap_num_test=100,
)  # fmt: skip


class DisentanglementMetricsTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = tiny_model('dsprites32', latent_dim=4)
        cls.model.config.input.data_dir = '/nonexistent'  # no TFDS copy: the renderer

    def test_representation_is_the_posterior_mean(self):
        x = dsprites.images_from_factors(dsprites.sample_factors(jax.random.key(0), 6), size=32)
        expected = np.asarray(self.model.encode(x).mean())  # distrax's mean, another path
        np.testing.assert_allclose(
            disentangle_eval.posterior_mean_fn(self.model)(x), expected, rtol=1e-5, atol=1e-6
        )

    def test_metrics_equal_the_pure_functions_with_the_same_keys(self):
        key = jax.random.key(3)
        out = disentangle_eval.disentanglement_metrics(self.model, key, **_SMALL)
        represent = disentangle_eval.posterior_mean_fn(self.model)

        def observe(f):
            return dsprites.images_from_factors(f, size=32)

        args = (represent, dsprites.sample_factors, observe)
        mig = disentanglement.mig(*args, jax.random.fold_in(key, 2), num_train=200)
        self.assertEqual(out['disentanglement/mig'], mig)
        sap = disentanglement.sap(*args, jax.random.fold_in(key, 4), num_train=100, num_test=100)
        self.assertEqual(out['disentanglement/sap'], sap)
        for name in ('beta_vae', 'factor_vae', 'dci_disentanglement', 'dci_informativeness'):
            self.assertBetween(out[f'disentanglement/{name}'], 0.0, 1.0)
        settings = out['disentanglement/settings']
        self.assertEqual(settings['mig'], {'num_train': 200, 'num_bins': 20})
        self.assertEqual(settings['data_source'], 'renderer')
        self.assertEqual(settings['dci']['regressor'], 'lasso')

    def test_subset_gives_the_same_numbers(self):
        key = jax.random.key(3)
        small = {k: v for k, v in _SMALL.items() if k.startswith('mig')}
        one = disentangle_eval.disentanglement_metrics(self.model, key, metrics=('mig',), **small)
        self.assertEqual(set(one), {'disentanglement/mig', 'disentanglement/settings'})
        mig = disentanglement.mig(
            disentangle_eval.posterior_mean_fn(self.model),
            dsprites.sample_factors,
            lambda f: dsprites.images_from_factors(f, size=32),
            jax.random.fold_in(key, 2),
            num_train=200,
        )
        self.assertEqual(one['disentanglement/mig'], mig)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, 'mig_num_bin=3 is unknown'):
            disentangle_eval.disentanglement_metrics(self.model, jax.random.key(0), mig_num_bin=3)
        with self.assertRaisesRegex(ValueError, "input.dataset='digits'"):
            disentangle_eval.disentanglement_metrics(tiny_model(), jax.random.key(0))


if __name__ == '__main__':
    absltest.main()


_TINY_SETTINGS = dict(_SMALL, dci_num_train=100, dci_num_test=50)


class EndOfRunTest(absltest.TestCase):
    """A tiny dsprites32 run: the metrics in eval.json, the same from `vae_jax.evaluate`."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        config = test_config.get_config()
        config.objective = 'dip_vae_i'
        config.input.dataset = 'dsprites32'
        config.input.data_dir = '/nonexistent'  # no TFDS copy: the renderer
        config.input.num_train_examples = 128
        config.input.num_test_examples = 64
        config.model.latent_dim = 4
        config.model.likelihood = 'bernoulli'
        cls.config = config
        # A fresh directory: a finished run left by an earlier test session would not train.
        cls.workdir = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())) / 'run'
        cls.tags = []
        log_image = run_files.MetricsLog.image

        def record_tag(self, tag, image, step):
            cls.tags.append(tag)
            return log_image(self, tag, image, step)

        with (
            mock.patch.object(run_eval, 'DISENTANGLEMENT_SETTINGS', _TINY_SETTINGS),
            mock.patch.object(run_files.MetricsLog, 'image', record_tag),
        ):
            trainer.train_and_evaluate(config, cls.workdir)
        cls.result = json.loads((cls.workdir / 'eval.json').read_text())

    def test_eval_json_has_every_metric_and_its_settings(self):
        names = (
            'beta_vae', 'factor_vae', 'mig', 'dci_disentanglement', 'dci_completeness',
            'dci_informativeness', 'sap',
        )  # fmt: skip
        for name in names:
            value = self.result[f'disentanglement/{name}']
            self.assertTrue(np.isfinite(value), name)
            self.assertBetween(value, -1e-6, 1.0 + 1e-6)
        settings = self.result['disentanglement/settings']
        self.assertEqual(settings['mig'], {'num_train': 200, 'num_bins': 20})
        self.assertEqual(settings['dci'], {'num_train': 100, 'num_test': 50, 'regressor': 'lasso'})
        self.assertEqual(settings['dataset'], 'dsprites32')
        self.assertEqual(settings['data_source'], 'renderer')
        self.assertGreater(settings['time_sec'], 0.0)
        # The same numbers in metrics.jsonl's last row, for the trackers.
        rows = [json.loads(line) for line in (self.workdir / 'metrics.jsonl').open()]
        last = [r for r in rows if 'eval/disentanglement/mig' in r][-1]
        self.assertEqual(last['eval/disentanglement/mig'], self.result['disentanglement/mig'])

    def test_the_traversals_are_drawn_and_logged(self):
        self.assertTrue((self.workdir / 'images' / 'latent_traversals.png').is_file())
        self.assertIn('images/latent_traversals', self.tags)

    def test_evaluate_gives_the_same_numbers(self):
        with mock.patch.object(run_eval, 'DISENTANGLEMENT_SETTINGS', _TINY_SETTINGS):
            again = evaluate.evaluate(
                self.workdir, k_samples=0, output='again.json', pictures=False, progress=False,
                disentanglement=True,
            )  # fmt: skip
        keys = [k for k in self.result if k.startswith('disentanglement/')]
        self.assertLen(keys, 8)
        for key in keys:
            if key != 'disentanglement/settings':
                self.assertEqual(again[key], self.result[key], key)
        self.assertEqual(
            json.loads((self.workdir / 'again.json').read_text())['disentanglement/mig'],
            self.result['disentanglement/mig'],
        )
        # Without the flag, evaluate leaves them out of its own record.
        plain = evaluate.evaluate(
            self.workdir, k_samples=0, output='plain.json', pictures=False, progress=False
        )
        self.assertNotIn('disentanglement/mig', plain)

    def test_a_run_without_factors_has_none(self):
        with self.assertRaisesRegex(ValueError, "input.dataset='digits'"):
            run_eval.disentanglement(tiny_model())
