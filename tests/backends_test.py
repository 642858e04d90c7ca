"""vae_jax.backends: the per-backend performance defaults are complete and valid, and a run
starts on every backend (one without measured defaults gets XLA's, logged once)."""

import json
from pathlib import Path
from unittest import mock

import jax
import numpy as np
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import backends, evaluation, layers, models, trainer


class BackendDefaultsTest(parameterized.TestCase):
    @parameterized.named_parameters(('cpu', 'cpu'), ('gpu', 'gpu'), ('tpu', 'tpu'))
    def test_entries_are_valid_choices(self, backend):
        d = backends.defaults(backend)
        self.assertIn(d.convt_implementation, layers.CONV_TRANSPOSE_IMPLEMENTATIONS)
        self.assertEqual(set(d.loop), {'dense', 'conv'})
        self.assertEqual(set(d.steps_per_call), {'dense', 'conv'})
        self.assertEqual(set(d.compiler_options), {'dense', 'conv'})
        for family in ('dense', 'conv'):
            self.assertIn(d.loop[family], ('scan', 'unroll'))
            self.assertGreaterEqual(d.steps_per_call[family], 1)

    def test_cpu_keeps_the_measured_choices(self):
        d = backends.defaults('cpu')
        self.assertEqual(d.convt_implementation, 'subpixel')
        self.assertEqual(d.loop, {'dense': 'scan', 'conv': 'unroll'})
        self.assertIsNone(d.compiler_options['dense'])
        self.assertEqual(d.compiler_options['conv'], {'xla_cpu_experimental_ynn_fusion_type': ''})

    @parameterized.parameters('cuda', 'rocm')
    def test_platform_names_map_to_gpu(self, name):
        self.assertIs(backends.defaults(name), backends.BACKEND_DEFAULTS['gpu'])

    def test_default_is_the_running_backend(self):
        self.assertIs(backends.defaults(), backends.defaults(jax.default_backend()))

    def test_tpu_takes_xla_defaults_without_a_warning(self):
        with (
            mock.patch.object(backends, '_warned', set()),
            mock.patch.object(backends.logging, 'warning') as warning,
        ):
            d = backends.defaults('tpu')
        self.assertIs(d, backends.XLA_DEFAULTS)
        self.assertEqual(d.convt_implementation, 'lax')
        self.assertEqual(d.loop, {'dense': 'scan', 'conv': 'scan'})
        self.assertEqual(d.compiler_options, {'dense': None, 'conv': None})
        warning.assert_not_called()

    def test_unknown_backend_gets_xla_defaults_logged_once_naming_it(self):
        with (
            mock.patch.object(backends, '_warned', set()),
            mock.patch.object(backends.logging, 'warning') as warning,
        ):
            for _ in range(3):
                self.assertIs(backends.defaults('METAL'), backends.XLA_DEFAULTS)
        warning.assert_called_once()
        message = warning.call_args.args[0] % warning.call_args.args[1:]
        self.assertIn("'METAL'", message)
        self.assertIn("XLA's defaults", message)

    def test_create_model_uses_the_backend_conv_transpose(self):
        from configs import default

        config = default.get_config()
        model = models.create_model(config.model, (28, 28, 1), config.objective)
        self.assertEqual(model.convt_implementation, backends.defaults().convt_implementation)


class StartsOnEveryBackendTest(parameterized.TestCase):
    """A run trains on CPU while `jax.default_backend()` (read by backends.py and steps.py)
    reports another platform: the defaults it picks must work and never refuse to start."""

    @parameterized.parameters('tpu', 'METAL')
    def test_conv_run_trains_with_xla_defaults(self, name):
        config = test_config.get_config()
        config.num_train_steps = 6
        config.checkpoint_every_steps = 6
        config.eval_every_steps = 6
        # A conv-transpose decoder, so the backend's conv-transpose implementation is used.
        config.model.encoder = 'reshape(8,8,1)-conv(4,3x3,s2)-relu-flatten'
        config.model.decoder = 'dense(64)-relu-reshape(4,4,4)-convt(4,3x3,s2)-relu-conv(out,3x3)'
        workdir = self.create_tempdir().full_path
        with (
            mock.patch.object(jax, 'default_backend', return_value=name),
            mock.patch.object(backends, '_warned', set()),
            mock.patch.object(backends.logging, 'warning') as warning,
        ):
            run = trainer.Run(config)
            self.assertEqual(run.model.convt_implementation, 'lax')
            result = trainer.train_and_evaluate(config, workdir)
        self.assertEqual(result['step'], 6)
        self.assertTrue(np.isfinite(result['elbo']))
        rows = [json.loads(line) for line in (Path(workdir) / 'metrics.jsonl').open()]
        self.assertTrue(all(np.isfinite(r['train/loss']) for r in rows if 'train/loss' in r))
        # Logged once for the unknown platform (Run was built twice), never for 'tpu'.
        self.assertEqual(warning.call_count, 1 if name == 'METAL' else 0)

    def test_an_evaluation_under_another_backend_leaves_its_options_to_no_later_one(self):
        """Evaluation reads the backend's compiler options at each call: one made while another
        platform is reported (as above) must not hand its options to the process's later
        evaluations (it once did, and later in-process runs evaluated with YNNPACK fusions on:
        their last digits then differed from the same run in a fresh process)."""
        config = test_config.get_config()
        run = trainer.Run(config)
        state = run.create_train_state()
        images = np.asarray(run.test_data['image'][:8])

        def evaluate():
            return evaluation.evaluate_dataset(
                jax.random.key(0),
                images,
                None,
                variables=run.variables(state),
                model_fn=run.parts.model_fn,
                input_spec=run.input_spec,
                k_list=(1, 4),
                nll_k=0,
            )

        compiled_with = []
        real_jit = jax.jit

        def jit(fn, **kwargs):
            compiled_with.append(kwargs.get('compiler_options'))
            return real_jit(fn, **kwargs)

        evaluation._jitted_evaluate_batch.cache_clear()
        self.addCleanup(evaluation._jitted_evaluate_batch.cache_clear)
        with mock.patch.object(jax, 'jit', jit):
            with mock.patch.object(jax, 'default_backend', return_value='tpu'):
                evaluate()
            after = evaluate()
        self.assertEqual(compiled_with, [None, backends.CPU_COMPILER_OPTIONS])
        evaluation._jitted_evaluate_batch.cache_clear()
        fresh = evaluate()  # The first evaluation of a process on CPU.
        for name in ('elbo', 'iwae_k4', 'kl'):
            self.assertEqual(after[name], fresh[name], name)


if __name__ == '__main__':
    absltest.main()
