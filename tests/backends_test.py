"""vae_jax.backends: the per-backend performance defaults are complete and valid."""

import jax
from absl.testing import absltest, parameterized

from vae_jax import backends, layers, models


class BackendDefaultsTest(parameterized.TestCase):
    @parameterized.named_parameters(('cpu', 'cpu'), ('gpu', 'gpu'))
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

    def test_unknown_backend_raises_naming_it(self):
        with self.assertRaisesRegex(ValueError, "'tpu'.*known: \\['cpu', 'gpu'\\]"):
            backends.defaults('tpu')

    def test_create_model_uses_the_backend_conv_transpose(self):
        from configs import default

        config = default.get_config()
        model = models.create_model(config.model, (28, 28, 1), config.objective)
        self.assertEqual(model.convt_implementation, backends.defaults().convt_implementation)


if __name__ == '__main__':
    absltest.main()
