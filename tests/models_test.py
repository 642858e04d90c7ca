"""Tests for vae_jax.models: shapes, parameter trees, BatchNorm, CVAE labels, learned sigma."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from configs import default
from vae_jax import distributions, models

# The architectures of the experiment configs: (model overrides, data shape).
ARCHITECTURES = {
    'fashion_32x32': (
        dict(
            encoder='conv(4,3x3,s2)-relu-conv(16,3x3,s2)-relu-flatten',
            latent_dim=16,
            # 8 -> 16 -> 32 by the two SAME conv-transposes; a SAME 4x4 conv keeps 32 (VALID: 29).
            decoder=(
                'dense(64)-relu-reshape(8,8,1)-convt(16,3x3,s2)-relu-convt(8,3x3,s2)-relu'
                '-conv(out,4x4)'
            ),
        ),
        (32, 32, 1),
    ),
    'mnist_latent2': (
        dict(
            encoder='conv(8,5x5,s2)-tanh-conv(8,5x5,s2)-tanh-flatten-dense(64)-tanh',
            latent_dim=2,
            # reshape(7,7,8) (not 4,4,8): 7 -> 14 -> 28 with SAME stride-2 conv-transposes.
            decoder=(
                'dense(64)-tanh-dense(392)-tanh-reshape(7,7,8)-convt(8,5x5,s2)-tanh'
                '-convt(8,5x5,s2)-tanh-conv(out,3x3)'
            ),
        ),
        (28, 28, 1),
    ),
    'fashion_cb': (
        dict(
            encoder=(
                '[conv(32,3x3)-bn-selu]x2-maxpool(2)-[conv(64,3x3)-bn-selu]x2-maxpool(2)-flatten'
            ),
            latent_dim=8,
            decoder=(
                'dense(3136)-reshape(7,7,64)-upsample(2)-conv(32,3x3)-bn-selu-conv(32,3x3)-bn-selu'
                '-upsample(2)-conv(64,3x3)-bn-selu-conv(64,3x3)-bn-selu-conv(out,3x3)'
            ),
            likelihood='continuous_bernoulli',
        ),
        (28, 28, 1),
    ),
    'benchmark_w3': (
        dict(
            encoder='conv(32,3x3,s2)-relu-conv(64,3x3,s2)-relu-flatten',
            latent_dim=16,
            decoder=(
                'dense(3136)-relu-reshape(7,7,64)-convt(64,3x3,s2)-relu-convt(32,3x3,s2)-relu'
                '-conv(out,3x3)'
            ),
            likelihood='bernoulli',
        ),
        (28, 28, 1),
    ),
    'iwae_mlp': (
        dict(
            encoder='dense(200)-tanh-dense(200)-tanh',
            latent_dim=50,
            decoder='dense(200)-tanh-dense(200)-tanh-dense(out)',
            likelihood='bernoulli',
        ),
        (28, 28, 1),
    ),
    'eight_gaussians': (
        dict(
            encoder='dense(512)-selu-dense(512)-selu-dense(512)-selu',
            latent_dim=2,
            decoder='dense(512)-selu-dense(512)-selu-dense(512)-selu-dense(out)',
            likelihood='gaussian',
            gaussian_sigma='learned',
        ),
        (2,),
    ),
}

_SMALL_CONV = dict(
    encoder='conv(4,3x3,s2)-bn-relu-flatten',
    latent_dim=3,
    decoder='dense(32)-relu-reshape(4,4,2)-convt(4,3x3,s2)-bn-relu-conv(out,3x3)',
)
_SMALL_DENSE = dict(encoder='dense(8)-tanh', latent_dim=3, decoder='dense(8)-tanh-dense(out)')


def _config(**overrides):
    config = default.get_config().model
    config.update(overrides)
    return config


def _model(overrides, data_shape, objective='elbo', **kwargs):
    return models.create_model(_config(**overrides), data_shape, objective, **kwargs)


def _init(model, data_shape):
    y = jnp.zeros((), jnp.int32) if model.use_labels else None
    return model.init(jax.random.key(0), jnp.zeros(data_shape), y, train=False)


class ShapeTest(parameterized.TestCase):
    @parameterized.named_parameters(
        (f'{name}_{batch_name}', name, batch_shape)
        for name in ARCHITECTURES
        for batch_name, batch_shape in (('unbatched', ()), ('batched', (3,)), ('k_by_b', (2, 3)))
    )
    def test_encode_decode_shapes(self, name, batch_shape):
        overrides, data_shape = ARCHITECTURES[name]
        config = _config(**overrides)
        model = models.create_model(config, data_shape, 'elbo')
        variables = jax.eval_shape(lambda: _init(model, data_shape))
        d = config.latent_dim
        m = distributions.likelihood_num_channels(config.likelihood, config.gaussian_sigma)
        x = jax.ShapeDtypeStruct((*batch_shape, *data_shape), jnp.float32)
        z = jax.ShapeDtypeStruct((*batch_shape, d), jnp.float32)
        params = jax.eval_shape(
            lambda v, x: model.apply(v, x, train=False, method='encode'), variables, x
        )
        out = jax.eval_shape(
            lambda v, z: model.apply(v, z, train=False, method='decode'), variables, z
        )
        self.assertEqual(params.shape, (*batch_shape, 2 * d))
        self.assertEqual(out.shape, (*batch_shape, *data_shape[:-1], data_shape[-1] * m))
        self.assertEqual((params.dtype, out.dtype), (jnp.float32, jnp.float32))
        self.assertEqual(set(variables['params']), {'encoder', 'decoder'})
        self.assertIn('head', variables['params']['encoder'])

    def test_parameter_tree_of_benchmark_w3(self):
        overrides, data_shape = ARCHITECTURES['benchmark_w3']
        variables = jax.eval_shape(lambda: _init(_model(overrides, data_shape), data_shape))
        shapes = jax.tree.map(lambda a: a.shape, variables['params'])
        self.assertEqual(
            shapes,
            {
                'encoder': {
                    'Conv_0': {'kernel': (3, 3, 1, 32), 'bias': (32,)},
                    'Conv_1': {'kernel': (3, 3, 32, 64), 'bias': (64,)},
                    'head': {'kernel': (3136, 32), 'bias': (32,)},
                },
                'decoder': {
                    'Dense_0': {'kernel': (16, 3136), 'bias': (3136,)},
                    'ConvTranspose_0': {'kernel': (3, 3, 64, 64), 'bias': (64,)},
                    'ConvTranspose_1': {'kernel': (3, 3, 64, 32), 'bias': (32,)},
                    'Conv_0': {'kernel': (3, 3, 32, 1), 'bias': (1,)},
                },
            },
        )

    def test_batch_stats_tree_of_fashion_cb(self):
        overrides, data_shape = ARCHITECTURES['fashion_cb']
        variables = jax.eval_shape(lambda: _init(_model(overrides, data_shape), data_shape))
        stats = variables['batch_stats']
        self.assertEqual(set(stats), {'encoder', 'decoder'})
        self.assertLen(stats['encoder'], 4)
        self.assertLen(stats['decoder'], 4)
        self.assertEqual(stats['encoder']['BatchNorm_3']['mean'].shape, (64,))

    @parameterized.named_parameters(
        ('diagonal', 'elbo', 'diagonal', 2 * 4),
        ('full', 'iwae', 'full', 2 * 4 + 6),
        ('autoencoder', 'autoencoder', 'diagonal', 4),
    )
    def test_posterior_head_size(self, objective, posterior, num_params):
        overrides = dict(_SMALL_DENSE, latent_dim=4, posterior=posterior)
        model = _model(overrides, (8, 8, 1), objective)
        variables = _init(model, (8, 8, 1))
        out = model.apply(variables, jnp.ones((5, 8, 8, 1)), train=False, method='encode')
        self.assertEqual(out.shape, (5, num_params))

    @parameterized.named_parameters(
        ('dense', _SMALL_DENSE),
        (
            'conv',
            dict(
                _SMALL_CONV,
                encoder='conv(4,3x3,s2)-relu-flatten',
                decoder='dense(32)-relu-reshape(4,4,2)-convt(4,3x3,s2)-relu-conv(out,3x3)',
            ),
        ),
    )
    def test_leading_axes_are_flattened_consistently(self, overrides):
        model = _model(overrides, (8, 8, 1))
        variables = _init(model, (8, 8, 1))
        x = jax.random.uniform(jax.random.key(1), (2, 3, 8, 8, 1))
        z = jax.random.normal(jax.random.key(2), (2, 3, 3))
        encode = jax.jit(lambda x: model.apply(variables, x, train=False, method='encode'))
        decode = jax.jit(lambda z: model.apply(variables, z, train=False, method='decode'))
        np.testing.assert_allclose(encode(x)[1, 2], encode(x[1, 2]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            encode(x).reshape((6, -1)), encode(x.reshape((6, 8, 8, 1))), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(decode(z)[0, 1], decode(z[0, 1]), rtol=1e-5, atol=1e-6)

    def test_conv_transpose_implementations_agree(self):
        overrides = dict(_SMALL_CONV, decoder='dense(32)-relu-reshape(4,4,2)-convt(out,3x3,s2)')
        model = _model(overrides, (8, 8, 1))
        variables = _init(model, (8, 8, 1))
        z = jax.random.normal(jax.random.key(1), (2, 3))

        def value_and_grad(implementation):
            decode = lambda v: model.clone(convt_implementation=implementation).apply(
                v, z, train=False, method='decode'
            )
            return decode(variables), jax.grad(lambda v: jnp.sum(jnp.sin(decode(v))))(variables)

        want = value_and_grad('lax')
        for implementation in ('subpixel', 'custom_vjp'):
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                value_and_grad(implementation),
                want,
            )

    def test_call_returns_encoder_and_decoder_outputs(self):
        model = _model(_SMALL_DENSE, (8, 8, 1))
        variables = _init(model, (8, 8, 1))
        x = jnp.ones((2, 8, 8, 1))
        params, out = model.apply(variables, x, train=False)
        np.testing.assert_allclose(params, model.apply(variables, x, train=False, method='encode'))
        np.testing.assert_allclose(
            out, model.apply(variables, params[:, :3], train=False, method='decode')
        )


class ValuesTest(absltest.TestCase):
    def test_dense_model_matches_numpy(self):
        # Independent float64 reference: flatten-Dense-tanh-head; z -> Dense-tanh-Dense-reshape.
        model = _model(_SMALL_DENSE, (4, 4, 1))
        variables = _init(model, (4, 4, 1))
        p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])
        x = np.asarray(jax.random.uniform(jax.random.key(1), (5, 4, 4, 1)), np.float64)
        dense = lambda h, q: h @ q['kernel'] + q['bias']
        want = dense(
            np.tanh(dense(x.reshape((5, 16)), p['encoder']['Dense_0'])), p['encoder']['head']
        )
        got = model.apply(variables, jnp.asarray(x, jnp.float32), train=False, method='encode')
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        z = np.asarray(jax.random.normal(jax.random.key(2), (5, 3)), np.float64)
        h = dense(np.tanh(dense(z, p['decoder']['Dense_0'])), p['decoder']['Dense_1'])
        got = model.apply(variables, jnp.asarray(z, jnp.float32), train=False, method='decode')
        np.testing.assert_allclose(got, h.reshape((5, 4, 4, 1)), rtol=1e-5, atol=1e-6)

    def test_pool_and_upsample_match_numpy(self):
        overrides = dict(_SMALL_DENSE, encoder='maxpool(2)-upsample(2)-flatten')
        model = _model(overrides, (4, 4, 1))
        variables = _init(model, (4, 4, 1))
        x = np.asarray(jax.random.uniform(jax.random.key(1), (4, 4, 1)), np.float64)
        pooled = x[:, :, 0].reshape((2, 2, 2, 2)).max(axis=(1, 3))
        features = np.kron(pooled, np.ones((2, 2))).reshape(16)
        head = jax.tree.map(
            lambda a: np.asarray(a, np.float64), variables['params']['encoder']['head']
        )
        got = model.apply(variables, jnp.asarray(x, jnp.float32), train=False, method='encode')
        np.testing.assert_allclose(
            got, features @ head['kernel'] + head['bias'], rtol=1e-5, atol=1e-6
        )


class BatchNormTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.model = _model(dict(_SMALL_CONV, batch_norm_momentum=0.5), (8, 8, 1))
        self.variables = _init(self.model, (8, 8, 1))
        self.x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
        self.z = jax.random.normal(jax.random.key(2), (4, 2, 3))  # [B, K, D]

    def test_running_stats_update_in_training_only(self):
        batched = self.model.clone(bn_axis_name=None)
        _, updated = batched.apply(
            self.variables, self.x, train=True, method='encode', mutable=['batch_stats']
        )
        before = self.variables['batch_stats']['encoder']['BatchNorm_0']
        after = updated['batch_stats']['encoder']['BatchNorm_0']
        self.assertFalse(np.allclose(before['mean'], after['mean']))
        self.assertFalse(np.allclose(before['var'], after['var']))
        # momentum 0.5: new = 0.5 * old + 0.5 * batch statistic.
        h = self._first_conv(self.x)
        np.testing.assert_allclose(
            after['mean'], 0.5 * h.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
        )
        _, unchanged = batched.apply(
            self.variables, self.x, train=False, method='encode', mutable=['batch_stats']
        )
        jax.tree.map(
            np.testing.assert_array_equal, unchanged['batch_stats'], self.variables['batch_stats']
        )

    def _first_conv(self, x):
        p = self.variables['params']['encoder']['Conv_0']
        return (
            jax.lax.conv_general_dilated(
                x, p['kernel'], (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
            )
            + p['bias'][None, None, None]
        )

    def test_eval_is_deterministic_and_per_example(self):
        encode = lambda x: self.model.apply(self.variables, x, train=False, method='encode')
        np.testing.assert_array_equal(encode(self.x), encode(self.x))
        # Running averages: one example's output does not depend on the rest of the batch.
        np.testing.assert_allclose(encode(self.x)[:1], encode(self.x[:1]), rtol=1e-5, atol=1e-6)
        batched = self.model.clone(bn_axis_name=None)
        train = lambda x: batched.apply(
            self.variables, x, train=True, method='encode', mutable=['batch_stats']
        )[0]
        self.assertFalse(np.allclose(train(self.x)[:2], train(self.x[:2])))

    def test_vmap_with_axis_name_pools_like_a_batched_call(self):
        # steps.py: per-example encode / decode (z [K, D]) under vmap(axis_name='batch').
        def per_example(x, z):
            out = {}
            mutable = ['batch_stats']
            apply = self.model.apply
            out['q'], s1 = apply(self.variables, x, train=True, method='encode', mutable=mutable)
            out['p'], s2 = apply(self.variables, z, train=True, method='decode', mutable=mutable)
            return out, (s1['batch_stats']['encoder'], s2['batch_stats']['decoder'])

        out, stats = jax.jit(jax.vmap(per_example, axis_name='batch'))(self.x, self.z)
        stats = jax.tree.map(lambda a: a[0], stats)  # the same on every vmapped example
        batched = self.model.clone(bn_axis_name=None)
        want_q, s1 = batched.apply(
            self.variables, self.x, train=True, method='encode', mutable=['batch_stats']
        )
        want_p, s2 = batched.apply(
            self.variables, self.z, train=True, method='decode', mutable=['batch_stats']
        )
        tight = dict(rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out['q'], want_q, **tight)
        np.testing.assert_allclose(out['p'], want_p, **tight)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, **tight),
            stats,
            (s1['batch_stats']['encoder'], s2['batch_stats']['decoder']),
        )


class LabelsTest(parameterized.TestCase):
    @parameterized.named_parameters(('dense', _SMALL_DENSE), ('conv', _SMALL_CONV))
    def test_encoder_and_decoder_depend_on_the_label(self, overrides):
        model = _model(dict(overrides, use_labels=True, num_classes=3), (8, 8, 1))
        variables = _init(model, (8, 8, 1))
        x = jax.random.uniform(jax.random.key(1), (8, 8, 1))
        z = jax.random.normal(jax.random.key(2), (2, 3))  # [K, D], one example
        encode = lambda y: model.apply(variables, x, y, train=False, method='encode')
        decode = lambda y: model.apply(variables, z, y, train=False, method='decode')
        self.assertGreater(np.abs(encode(0) - encode(2)).max(), 1e-4)
        self.assertGreater(np.abs(decode(0) - decode(1)).max(), 1e-4)
        # A scalar label broadcasts over the sample axis of z [K, D].
        np.testing.assert_allclose(decode(1), decode(jnp.array([1, 1])), rtol=1e-6)
        np.testing.assert_array_equal(decode(1), decode(1))

    def test_missing_or_bad_labels(self):
        model = _model(dict(_SMALL_DENSE, use_labels=True, num_classes=3), (8, 8, 1))
        variables = _init(model, (8, 8, 1))
        x = jnp.zeros((2, 8, 8, 1))
        with self.assertRaisesRegex(ValueError, 'use_labels'):
            model.apply(variables, x, train=False, method='encode')
        with self.assertRaisesRegex(ValueError, 'do not broadcast'):
            model.apply(variables, x, jnp.zeros((3,), jnp.int32), train=False, method='encode')
        with self.assertRaisesRegex(ValueError, 'integers'):
            model.apply(variables, x, jnp.zeros((2,)), train=False, method='encode')

    def test_labels_ignored_without_use_labels(self):
        model = _model(_SMALL_DENSE, (8, 8, 1))
        variables = _init(model, (8, 8, 1))
        x = jnp.ones((8, 8, 1))
        np.testing.assert_array_equal(
            model.apply(variables, x, 0, train=False, method='encode'),
            model.apply(variables, x, 2, train=False, method='encode'),
        )


class LikelihoodChannelsTest(absltest.TestCase):
    def test_learned_sigma_is_a_broadcast_scalar(self):
        overrides, data_shape = ARCHITECTURES['eight_gaussians']
        model = _model(dict(overrides, sigma=0.7), data_shape)
        variables = _init(model, data_shape)
        raw = variables['params']['decoder']['raw_sigma']
        self.assertEqual(raw.shape, ())
        np.testing.assert_allclose(distributions.gaussian_scale(raw), 0.7, rtol=1e-5)
        z = jax.random.normal(jax.random.key(1), (5, 2))
        out = model.apply(variables, z, train=False, method='decode')
        self.assertEqual(out.shape, (5, 4))
        np.testing.assert_array_equal(out[:, 2:], jnp.full((5, 2), raw))
        self.assertGreater(np.abs(out[0, :2] - out[1, :2]).max(), 0.0)

    def test_per_pixel_sigma_doubles_the_channels(self):
        overrides = dict(_SMALL_CONV, likelihood='gaussian', gaussian_sigma='per_pixel')
        model = _model(overrides, (8, 8, 3))
        variables = jax.eval_shape(lambda: _init(model, (8, 8, 3)))
        out = jax.eval_shape(
            lambda v: model.apply(v, jnp.ones((2, 3)), train=False, method='decode'), variables
        )
        self.assertEqual(out.shape, (2, 8, 8, 6))
        self.assertNotIn('raw_sigma', variables['params']['decoder'])


class ErrorsTest(absltest.TestCase):
    def test_unknown_token_names_key_token_and_allowed(self):
        with self.assertRaisesRegex(ValueError, r"model\.encoder.*'swish'.*Allowed tokens: dense"):
            _model(dict(_SMALL_DENSE, encoder='dense(8)-swish'), (8, 8, 1))
        with self.assertRaisesRegex(ValueError, r"model\.decoder.*'convt\(8\)'.*Allowed"):
            _model(dict(_SMALL_DENSE, decoder='dense(8)-convt(8)-dense(out)'), (8, 8, 1))

    def test_decoder_output_shape_mismatch_is_caught_at_creation(self):
        # The Fashion 32x32 decoder with a VALID 4x4 output conv gives 29x29, not 32x32.
        overrides, data_shape = ARCHITECTURES['fashion_32x32']
        decoder = overrides['decoder'].replace('conv(out,4x4)', 'conv(out,4x4,valid)')
        with self.assertRaisesRegex(ValueError, r'model\.decoder.*\(29, 29, 1\).*\(32, 32, 1\)'):
            _model(dict(overrides, decoder=decoder), data_shape)

    def test_spatial_layer_on_flat_features(self):
        with self.assertRaisesRegex(ValueError, r"model\.decoder.*'conv\(out,3x3\)'.*reshape"):
            _model(dict(_SMALL_DENSE, decoder='dense(8)-conv(out,3x3)'), (8, 8, 1))

    def test_bad_reshape(self):
        with self.assertRaisesRegex(ValueError, r"'reshape\(3,3,1\)' cannot reshape.*\(8,\)"):
            _model(dict(_SMALL_DENSE, decoder='dense(8)-reshape(3,3,1)-conv(out,3x3)'), (8, 8, 1))

    def test_wrong_input_shapes(self):
        model = _model(_SMALL_DENSE, (8, 8, 1))
        variables = _init(model, (8, 8, 1))
        with self.assertRaisesRegex(ValueError, r'x must have shape \[\.\.\., 8, 8, 1\].*\(8, 8\)'):
            model.apply(variables, jnp.zeros((8, 8)), train=False, method='encode')
        with self.assertRaisesRegex(ValueError, r'z must have shape \[\.\.\., 3\].*\(2, 4\)'):
            model.apply(variables, jnp.zeros((2, 4)), train=False, method='decode')


if __name__ == '__main__':
    absltest.main()
