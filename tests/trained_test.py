"""`vae_jax.load` (vae_jax/trained.py) and parameters-only checkpoints (`export_params`)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
from absl.testing import absltest

from configs import test as test_config
from vae_jax import checkpoints, data, evaluate, trained, trainer

REPO = Path(__file__).resolve().parents[1]
K = 20  # Importance samples: enough to compare, cheap to compute.
NUM_EXAMPLES = 40

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
        cls.images = test['image'][:NUM_EXAMPLES]
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


if __name__ == '__main__':
    absltest.main()
