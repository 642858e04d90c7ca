"""The vectorised k sweep (vae_jax/k_sweep.py) against the same rows trained one at a time, on
dynamically binarised MNIST with the IWAE paper's protocol (configs/iwae_mnist.py), shrunk.

Reads the prepared MNIST from $TFDS_DATA_DIR, else ../shared/data/tfds; skipped where absent.
"""

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest

import vae_jax
from configs import iwae_mnist, iwae_mnist_2layer
from configs import test as test_config
from vae_jax import checkpoints, k_sweep, losses, models, steps, trained, trainer

TFDS_DIR = Path(
    os.environ.get('TFDS_DATA_DIR') or Path(__file__).resolve().parents[2] / 'shared/data/tfds'
)
# float32 rounding: masked sums over k_max entries and vmapped matmuls do not sum in the order
# of a separate run's, and training amplifies it. Measured after 300 steps of these rows: params
# within 1.1e-5 (absolute), log rows within 1.2e-5 (relative); the same rows with ELBO and IWAE
# swapped differ by 0.43 in the params.
RTOL, ATOL = 1e-4, 1e-4
NUM_STEPS = 200
# The restarted run stops between log steps and checkpoints, at the end of a call (a stop
# inside a call splits the call's float32 metric sums, which changes their last bits).
STOP_AT = 75
# (objective, k, kl_samples): an ELBO and an IWAE row of k=5 beside the k=50 row that sets k_max.
ROWS = {
    'elbo_k5': ('elbo', 5, 5),
    'iwae_k5': ('iwae', 5, 1),
    'iwae_k50': ('iwae', 50, 1),
}


def _config(objective, k, kl_samples):
    """configs/iwae_mnist.py, small: 500 training images (100 steps a pass) in batches of 5."""
    c = iwae_mnist.get_config()
    c.objective, c.k_samples, c.kl_samples = objective, k, kl_samples
    c.num_train_steps = NUM_STEPS
    c.log_every_steps = 50
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 100
    c.steps_per_call = 25
    c.eval_k_samples = (1, 5)
    c.input.data_dir = str(TFDS_DIR)
    c.input.batch_size = 5
    c.input.num_train_examples = 500
    c.input.num_test_examples = 100
    c.input.eval_batch_size = 100
    c.model.latent_dim = 4
    c.model.encoder = 'dense(16)-tanh'
    c.model.decoder = 'dense(16)-tanh-dense(out)'
    return c


def _configs():
    return {name: _config(*row) for name, row in ROWS.items()}


def _train_rows(workdir):
    rows = []
    for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines():
        row = {k: v for k, v in json.loads(line).items() if k.startswith('train/') or k == 'step'}
        row.pop('train/steps_per_sec', None)
        if len(row) > 1:
            rows.append(row)
    return rows


def _params(workdir, config):
    state, step = checkpoints.load(workdir, trainer.Run(config).create_train_state())
    return jax.device_get(state.params), step


@pytest.mark.slow
@absltest.skipUnless(TFDS_DIR.is_dir(), f'no prepared MNIST at {TFDS_DIR} (set $TFDS_DATA_DIR)')
class KSweepTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
        cls.vectorised = cls.root / 'vectorised'
        cls.results = k_sweep.train_and_evaluate(_configs(), cls.vectorised, overwrite=True)
        cls.alone = {}
        for name, config in _configs().items():
            cls.alone[name] = trainer.train_and_evaluate(
                config, cls.root / 'alone' / name, overwrite=True
            )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()

    def test_each_row_equals_its_separate_run(self):
        for name, config in _configs().items():
            with self.subTest(name):
                a, step_a = _params(self.vectorised / name, config)
                b, step_b = _params(self.root / 'alone' / name, config)
                self.assertEqual((step_a, step_b), (NUM_STEPS, NUM_STEPS))
                jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, RTOL, ATOL), a, b)
                rows_a = _train_rows(self.vectorised / name)
                rows_b = _train_rows(self.root / 'alone' / name)
                self.assertEqual([r['step'] for r in rows_a], [r['step'] for r in rows_b])
                for row_a, row_b in zip(rows_a, rows_b, strict=True):
                    extra = set(row_a) - set(row_b)
                    # ELBO rows also log the IWAE bound and ESS of their k draws.
                    self.assertEqual(
                        extra, {'train/bound', 'train/ess'} if name.startswith('elbo') else set()
                    )
                    for key in row_b:
                        np.testing.assert_allclose(
                            row_a[key], row_b[key], RTOL, ATOL, err_msg=f'{row_b["step"]} {key}'
                        )
                for key in ('elbo', 'iwae_k1', 'iwae_k5'):
                    np.testing.assert_allclose(
                        self.results[name][key], self.alone[name][key], RTOL, ATOL, err_msg=key
                    )

    def test_rows_are_separate_runs_on_disk(self):
        for name, (objective, k, kl_samples) in ROWS.items():
            with self.subTest(name):
                workdir = self.vectorised / name
                config = json.loads((workdir / 'config.json').read_text())
                self.assertEqual(
                    (config['objective'], config['k_samples'], config['kl_samples']),
                    (objective, k, kl_samples),
                )
                saved = json.loads((workdir / 'eval.json').read_text())
                self.assertEqual(saved['k_sweep']['k_max'], 50)
                # vae_jax.load gives the model its separate run would have trained.
                model = vae_jax.load(workdir)
                alone = vae_jax.load(self.root / 'alone' / name)
                self.assertEqual((model.step, alone.step), (NUM_STEPS, NUM_STEPS))
                x = (jax.random.uniform(jax.random.key(0), (3, 28, 28, 1)) > 0.5).astype(float)
                np.testing.assert_allclose(
                    model.log_likelihood(model.eval_key, x, k_samples=4),
                    alone.log_likelihood(alone.eval_key, x, k_samples=4),
                    RTOL,
                    ATOL,
                )

    def test_stopped_and_restarted_every_row_resumes_to_the_same_state(self):
        resumed = self.root / 'resumed'
        stopped = k_sweep.train_and_evaluate(
            _configs(), resumed, overwrite=True, stop_at_step=STOP_AT
        )
        self.assertEqual(stopped, {name: {'step': STOP_AT} for name in ROWS})
        k_sweep.train_and_evaluate(_configs(), resumed)
        for name, config in _configs().items():
            with self.subTest(name):
                self.assertEqual(_train_rows(resumed / name), _train_rows(self.vectorised / name))
                a, _ = _params(resumed / name, config)
                b, _ = _params(self.vectorised / name, config)
                jax.tree.map(np.testing.assert_array_equal, a, b)


class RowObjectiveTest(absltest.TestCase):
    """The masked objective against `losses.model_iwae` / `model_elbo` at the row's own k,
    values and gradients, on a linear-Gaussian toy model."""

    def _model(self, params, x):
        def encode(x):
            return distrax.MultivariateNormalDiag(params['a'] * x[:3], jnp.exp(params['s']))

        def decode(z):
            loc = z @ params['w']
            return distrax.Independent(distrax.Normal(loc, 1.0), 1)

        return losses.one_layer_model(x, encode, decode)

    def test_values_and_gradients_equal_the_unmasked_objectives(self):
        params = {
            'a': jnp.asarray(0.7),
            's': jnp.asarray([-0.3, 0.1, 0.2]),
            'w': jax.random.normal(jax.random.key(1), (3, 5)),
        }
        x = jax.random.normal(jax.random.key(2), (5,))
        key = jax.random.key(3)
        beta = jnp.asarray(1.0)
        cases = {
            'iwae_k3': ('iwae', 3, 3, lambda m: losses.model_iwae(key, m, beta=beta, k_samples=3)),
            'elbo_k3_kl2': (
                'elbo',
                3,
                2,
                lambda m: losses.model_elbo(
                    key, m, beta=beta, k_samples=3, analytic_kl=False, kl_samples=2
                ),
            ),
        }
        for name, (objective, k, kl, reference) in cases.items():
            with self.subTest(name):
                config = test_config.get_config()
                config.objective, config.k_samples, config.kl_samples = objective, k, kl
                row = jax.tree.map(lambda a: a[0], k_sweep.row_values([config]))

                def masked(p, row=row):
                    out = k_sweep.row_objective(key, self._model(p, x), beta=beta, k_max=8, **row)
                    return out['loss'], out

                def plain(p, reference=reference):
                    out = reference(self._model(p, x))
                    return out['loss'], out

                (_, got), g_got = jax.jit(jax.value_and_grad(masked, has_aux=True))(params)
                (_, want), g_want = jax.jit(jax.value_and_grad(plain, has_aux=True))(params)
                for term in want:
                    np.testing.assert_allclose(got[term], want[term], rtol=1e-6, err_msg=term)
                jax.tree.map(
                    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                    g_got,
                    g_want,
                )

    def test_two_layer_protocol_model_draws_the_separate_runs_samples(self):
        # TwoLayerVAE draws both layers' noise as one [K, 100 + 50] normal and has the one-pass
        # `sample_and_log_posterior`: the first k of k_max draws must be the k-sample draws.
        config = iwae_mnist_2layer.get_config()
        parts = trained.build(config, (28, 28, 1))
        variables = models.init_variables(parts.model, jax.random.key(0), (28, 28, 1), False)
        bind = steps.make_model_binder(
            parts.model.apply, variables['params'], {}, parts.static, train=True
        )
        x = (jax.random.uniform(jax.random.key(1), (28, 28, 1)) > 0.5).astype(jnp.float32)
        key, beta = jax.random.key(2), jnp.asarray(1.0)
        for objective, k, kl in (('iwae', 5, 5), ('elbo', 3, 3)):
            with self.subTest(objective):
                row_config = iwae_mnist_2layer.get_config()
                row_config.objective, row_config.k_samples, row_config.kl_samples = objective, k, kl
                row = jax.tree.map(lambda a: a[0], k_sweep.row_values([row_config]))
                got = k_sweep.row_objective(key, bind(x, None), beta=beta, k_max=20, **row)
                if objective == 'iwae':
                    want = losses.model_iwae(key, bind(x, None), beta=beta, k_samples=k)
                else:
                    want = losses.model_elbo(
                        key, bind(x, None), beta=beta, k_samples=k, analytic_kl=False, kl_samples=kl
                    )
                for term in want:
                    np.testing.assert_allclose(got[term], want[term], rtol=1e-5, err_msg=term)

    def test_rows_at_different_steps_are_refused_naming_them(self):
        workdir = Path(self.create_tempdir().full_path)
        for name, step in (('iwae_k5', 3000), ('elbo_k5', 0)):
            (workdir / name / 'checkpoints' / str(step)).mkdir(parents=True)
        configs = {'iwae_k5': iwae_mnist.get_config(), 'elbo_k5': iwae_mnist.get_config()}
        with self.assertRaisesRegex(ValueError, 'iwae_k5 at step 3000, elbo_k5 at step 0'):
            k_sweep.check_same_step(configs, workdir)
        k_sweep.check_same_step({'iwae_k5': configs['iwae_k5']}, workdir)  # one row: fine

    def test_unsupported_rows_are_refused_naming_key_and_value(self):
        config = test_config.get_config()
        config.objective = 'iwae'
        config.gradient_estimator = 'dreg'
        with self.assertRaisesRegex(ValueError, "row 'r'.*gradient_estimator='dreg'.*'reparam'"):
            k_sweep.check_row(config, 'r')
        config.objective = 'elbo'
        config.analytic_kl = True
        with self.assertRaisesRegex(ValueError, 'analytic_kl=True; allowed: False'):
            k_sweep.check_row(config, 'r')
        config.objective = 'miwae'
        with self.assertRaisesRegex(ValueError, "objective='miwae'"):
            k_sweep.check_row(config, 'r')


def _load_table1():
    """The script as a module (it defines its command-line flags: load it once)."""
    path = Path(__file__).resolve().parents[1] / 'experiments' / 'iwae_mnist' / 'table1.py'
    spec = importlib.util.spec_from_file_location('table1', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Table1RowsTest(absltest.TestCase):
    """experiments/iwae_mnist/table1.py: row names -> the configs of the separate runs."""

    table1 = _load_table1()

    def test_default_rows_are_the_paper_rows_with_vae_kl_over_k(self):
        configs = self.table1.row_configs(iwae_mnist.get_config(), self.table1.ONE_LAYER_ROWS)
        got = {n: (c.objective, c.k_samples, c.kl_samples) for n, c in configs.items()}
        self.assertEqual(
            got,
            {
                'elbo_k1': ('elbo', 1, 1),
                'elbo_k5': ('elbo', 5, 5),
                'elbo_k50': ('elbo', 50, 50),
                'iwae_k5': ('iwae', 5, 1),
                'iwae_k50': ('iwae', 50, 1),
            },
        )
        # The full protocol: 3,280 passes of 3,000 steps.
        self.assertEqual({c.num_train_steps for c in configs.values()}, {9_840_000})

    def test_bad_rows_are_refused_naming_them(self):
        config = iwae_mnist.get_config()
        with self.assertRaisesRegex(ValueError, "'vae_k5' is not a row; allowed: elbo_k<K>"):
            self.table1.row_configs(config, 'iwae_k5,vae_k5')
        with self.assertRaisesRegex(ValueError, "repeats 'iwae_k5'"):
            self.table1.row_configs(config, 'iwae_k5,iwae_k5')


if __name__ == '__main__':
    absltest.main()
