"""The evaluate command and the run's pictures, on tiny trained runs (digits, 2-D toy data)."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
from absl.testing import absltest
from PIL import Image

from configs import test as test_config
from vae_jax import evaluate, pictures, plots, trainer

REPO = Path(__file__).resolve().parents[1]
# $TFDS_DATA_DIR, else the prepared copies CI finds beside its clone.
DATA_DIR = Path(os.environ.get('TFDS_DATA_DIR') or REPO.parent / 'shared' / 'data' / 'tfds')


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert('RGB'), np.float32)


def _toy_config():
    config = test_config.get_config()
    config.input.dataset = 'eight_gaussians'
    config.input.toy_num_examples = 256
    config.model.likelihood = 'gaussian'
    config.model.gaussian_sigma = 'learned'
    return config


class EvaluateDigitsTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.workdir = Path(absltest.TEST_TMPDIR.value) / 'evaluate_digits'
        trainer.train_and_evaluate(test_config.get_config(), cls.workdir, overwrite=True)

    def test_writes_protocol_and_consistent_bounds(self):
        result = evaluate.evaluate(
            self.workdir, k_samples=64, max_examples=40, output='eval_k64.json', progress=False
        )
        saved = json.loads((self.workdir / 'eval_k64.json').read_text())
        for key, value in [
            ('step', 12),
            ('split', 'test'),
            ('num_examples', 40),
            ('nll_k', 64),
            ('binarize', 'none'),
            ('seed', 0),
        ]:
            self.assertEqual(saved[key], value, key)
        self.assertEqual(saved['nll'], result['nll'])
        # -log p(x) <= -IWAE_4 <= -IWAE_1 (bounds tighten with k; NLL uses k = 64).
        self.assertLessEqual(result['nll'], -result['iwae_k4'] + 0.05)
        self.assertLessEqual(-result['iwae_k4'], -result['iwae_k1'] + 0.05)
        table = evaluate.format_table(result)
        self.assertIn('NLL with k=64', table)
        self.assertIn(f'{result["nll"]:.4f}', table)

    def test_progress_without_a_terminal_is_plain_lines(self):
        stderr = io.StringIO()  # not a terminal, like `2>> train.log`
        with mock.patch.object(sys, 'stderr', stderr):
            evaluate.evaluate(self.workdir, k_samples=4, max_examples=10, output='p.json')
        text = stderr.getvalue()
        self.assertNotIn('\r', text)  # no bar redraws in a log file
        self.assertIn('eval test: 10/10 examples', text)

    def test_chunking_and_batching_do_not_change_the_estimate(self):
        kwargs = dict(k_samples=30, max_examples=25, pictures=False, progress=False)
        a = evaluate.evaluate(self.workdir, chunk_size=30, batch_size=25, output='a.json', **kwargs)
        b = evaluate.evaluate(self.workdir, chunk_size=7, batch_size=4, output='b.json', **kwargs)
        self.assertAlmostEqual(a['nll'], b['nll'], places=4)
        self.assertAlmostEqual(a['elbo'], b['elbo'], places=4)

    def test_trainer_writes_every_picture_type_for_image_data(self):
        images = self.workdir / 'images'
        for name in ('reconstructions', 'samples', 'latent_scatter', 'manifold', 'training_curves'):
            pixels = _png(images / f'{name}.png')
            self.assertGreater(pixels.shape[0], 50, name)
            self.assertGreater(pixels.var(), 10.0, f'{name}.png is blank')
        self.assertFalse((images / 'toy_density.png').exists())

    def test_missing_config_and_checkpoint_are_named(self):
        empty = Path(self.create_tempdir().full_path)
        with self.assertRaisesRegex(FileNotFoundError, 'config.json not found'):
            evaluate.evaluate(empty, progress=False)
        (empty / 'config.json').write_text((self.workdir / 'config.json').read_text())
        with self.assertRaisesRegex(FileNotFoundError, 'no checkpoint in .*checkpoints'):
            evaluate.evaluate(empty, progress=False)

    def test_importable_beside_the_train_command(self):
        # Both CLIs have --workdir; only a module run as a program may define its flags.
        from vae_jax import train

        self.assertTrue(callable(train.main) and callable(evaluate.main))

    def test_command_line_prints_the_protocol(self):
        out = subprocess.run(
            [sys.executable, '-m', 'vae_jax.evaluate', f'--workdir={self.workdir}',
             '--k_samples=8', '--max_examples=10', '--nopictures', '--output=cli.json'],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        self.assertIn('test split, 10 examples, step 12, NLL with k=8', out)
        self.assertTrue((self.workdir / 'cli.json').is_file())


class ToyPicturesTest(absltest.TestCase):
    def test_toy_run_ends_with_a_density_picture(self):
        workdir = Path(self.create_tempdir().full_path)
        with (
            mock.patch.object(pictures, 'TOY_GRID', 16),
            mock.patch.object(pictures, 'TOY_DENSITY_K', 8),
        ):
            trainer.train_and_evaluate(_toy_config(), workdir)
        density = _png(workdir / 'images' / 'toy_density.png')
        self.assertGreater(density.var(), 10.0)
        self.assertTrue((workdir / 'images' / 'latent_scatter.png').is_file())
        self.assertFalse((workdir / 'images' / 'reconstructions.png').exists())

    def test_pinwheel_run_writes_eval_json_with_its_true_density(self):
        workdir = Path(self.create_tempdir().full_path)
        config = _toy_config()
        config.input.dataset = 'pinwheel'
        seen = []
        original = plots.toy_density

        def spy(*args):
            seen.append(args[5])  # true_log_density
            return original(*args)

        with (
            mock.patch.object(pictures, 'TOY_GRID', 16),
            mock.patch.object(pictures, 'TOY_DENSITY_K', 8),
            mock.patch.object(plots, 'toy_density', spy),
        ):
            trainer.train_and_evaluate(config, workdir)
        result = json.loads((workdir / 'eval.json').read_text())
        self.assertNotIn('bits_per_dim', result)  # Real-valued data: no code length.
        self.assertIn('real-valued', result['bits_per_dim_note'])
        self.assertLen(seen, 1)
        self.assertTrue(np.all(np.isfinite(seen[0])))


class UnlabelledDataTest(absltest.TestCase):
    def test_latent_scatter_has_no_labels_for_a_set_without_labels(self):
        if not (DATA_DIR / 'binarized_mnist').is_dir():
            self.skipTest(f'{DATA_DIR}/binarized_mnist not prepared')
        config = test_config.get_config()
        config.input.dataset = 'binarized_mnist'
        config.input.data_dir = str(DATA_DIR)
        config.model.likelihood = 'bernoulli'
        config.input.num_train_examples = 256
        config.input.num_test_examples = 64
        workdir = Path(self.create_tempdir().full_path)
        seen = []
        original = plots.latent_scatter

        def spy(z, labels, path):
            seen.append(labels)
            return original(z, labels, path)

        with mock.patch.object(pictures.plots, 'latent_scatter', spy):
            trainer.train_and_evaluate(config, workdir)
        self.assertEqual(seen, [None])


class DataDirTest(absltest.TestCase):
    """Where evaluate reads data: --data_dir, else $TFDS_DATA_DIR, else the run's stored dir."""

    def _chosen(self, stored, flag, env):
        config = test_config.get_config()
        config.input.data_dir = stored
        environ = {} if env is None else {'TFDS_DATA_DIR': env}
        with mock.patch.dict('os.environ', environ, clear=True):
            evaluate.with_data_dir(config, flag)
        return config.input.data_dir

    def test_flag_beats_environment_beats_stored(self):
        self.assertEqual(self._chosen('../stored', '/flag', '/env'), '/flag')
        self.assertEqual(self._chosen('../stored', None, '/env'), '/env')
        self.assertEqual(self._chosen('../stored', None, None), '../stored')
        self.assertIsNone(self._chosen(None, None, None))


if __name__ == '__main__':
    absltest.main()
