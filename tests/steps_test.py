"""Tests of the jitted training step and the multi-step chunk (correctness only, never timing)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import input_transform, steps, trainer

# Small enough to compile fast. 4 steps per epoch, so 6 steps cross an epoch boundary (the
# permutation is redrawn inside a chunk) and the chunkings below split the steps differently.
NUM_TRAIN, BATCH, NUM_STEPS = 64, 16, 6
DENSE = ('dense(16)-relu', 'dense(16)-relu-dense(out)')
# A conv model on the 8x8 digits: the unrolled loop exists for conv gradients (docs/).
CONV = ('conv(4,3x3,s2)-relu-flatten', 'dense(32)-relu-reshape(4,4,2)-convt(out,3x3,s2)')
# (loop, steps of each call): one step per call, all steps in one scanned call, unrolled calls.
CHUNKINGS = (('scan', (1,) * NUM_STEPS), ('scan', (NUM_STEPS,)), ('unroll', (2, 2, 2)))


def _config(model=DENSE, loop='scan'):
    config = test_config.get_config()
    config.input.num_train_examples = NUM_TRAIN
    config.input.batch_size = BATCH
    config.model.encoder, config.model.decoder = model
    config.input.binarize = 'dynamic'  # the step's own Bernoulli draws are exercised too
    config.model.likelihood = 'bernoulli'
    config.loop = loop
    return config


def _train_chunks(run, chunks):
    """Trains from the initial state with `run.chunk_fn` (the trainer's own jitted call).

    Returns:
      (state, metric sums over all steps, perm_epoch after the last call).
    """
    state = run.create_train_state()
    images = jnp.asarray(run.train_data['image'])
    labels = jnp.asarray(run.train_data['label'])
    perm_epoch = jnp.asarray(0, jnp.int32)
    perm = run.permutation_fn(perm_epoch)
    beta = jnp.asarray(1.0)
    totals = {}
    for num_steps in chunks:
        state, perm, perm_epoch, sums = run.chunk_fn(
            state, perm, perm_epoch, images, labels, run.loop_key, run.data_key, beta,
            num_steps=num_steps,
        )  # fmt: skip
        for k, v in jax.device_get(sums).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    return state, totals, int(perm_epoch)


def _train_by_hand(run, num_steps):
    """The reference: `train_step` fed batch by batch with the rows the epoch permutation names.

    Independent of `train_chunk`'s loop, carry and in-loop permutation redraw.
    """
    images = input_transform.to_model_input(run.train_data['image'], run.input_spec)
    labels = jnp.asarray(run.train_data['label'])
    step_fn = jax.jit(functools.partial(steps.train_step, static=run.static))
    state = run.create_train_state()
    totals, norms = {}, []
    for step in range(num_steps):
        epoch, index = divmod(step, NUM_TRAIN // BATCH)
        perm = steps.epoch_permutation(run.data_key, epoch, NUM_TRAIN)
        idx = perm[index * BATCH : (index + 1) * BATCH]
        state, metrics = step_fn(state, images[idx], labels[idx], run.loop_key, jnp.asarray(1.0))
        for k, v in jax.device_get(metrics).items():
            totals[k] = totals.get(k, 0.0) + float(v)
        norms.append(float(metrics['grad_norm']))
    return state, totals, norms


def _assert_trees_close(actual, expected, **tolerances):
    jax.tree.map(functools.partial(np.testing.assert_allclose, **tolerances), actual, expected)


class TrainChunkTest(parameterized.TestCase):
    @parameterized.named_parameters(('dense', DENSE), ('conv', CONV))
    def test_scanned_unrolled_and_one_step_calls_match_hand_fed_steps(self, model):
        reference, ref_sums, norms = _train_by_hand(trainer.Run(_config(model)), NUM_STEPS)
        self.assertEqual(int(reference.step), NUM_STEPS)
        for loop, chunks in CHUNKINGS:
            with self.subTest(loop=loop, chunks=chunks):
                run = trainer.Run(_config(model, loop))
                state, sums, epoch = _train_chunks(run, chunks)
                self.assertEqual(int(state.step), NUM_STEPS)
                self.assertEqual(epoch, (NUM_STEPS - 1) // (NUM_TRAIN // BATCH))
                # Float tolerance: the compiled programs differ (fusion, summation order).
                _assert_trees_close(state.params, reference.params, rtol=2e-5, atol=2e-6)
                _assert_trees_close(state.opt_state, reference.opt_state, rtol=2e-5, atol=2e-6)
                self.assertEqual(sums.keys(), ref_sums.keys())
                # The gradient norm is sampled at each call's last step, standing for its steps.
                ends = np.cumsum(chunks) - 1
                ref_sums['grad_norm'] = sum(n * norms[e] for n, e in zip(chunks, ends, strict=True))
                for k, v in ref_sums.items():
                    np.testing.assert_allclose(sums[k], v, rtol=1e-4, atol=1e-5, err_msg=k)

    def test_grad_norm_is_the_mean_over_steps_when_nonfinite_updates_are_skipped(self):
        # skip_nonfinite_updates checks every step's norm, so every step's norm is logged.
        config = _config()
        config.skip_nonfinite_updates = True
        _, ref_sums, norms = _train_by_hand(trainer.Run(config), NUM_STEPS)
        _, sums, _ = _train_chunks(trainer.Run(config), (NUM_STEPS,))
        np.testing.assert_allclose(sums['grad_norm'], sum(norms), rtol=1e-4)
        self.assertNotAlmostEqual(sum(norms), NUM_STEPS * norms[-1], places=3)

    def test_unknown_loop(self):
        run = trainer.Run(_config())
        run.config.loop = 'while'  # past validation, as a caller of train_chunk could
        with self.assertRaisesRegex(ValueError, "loop must be 'scan' or 'unroll'.*'while'"):
            _train_chunks(run, [1])


class ChunkIndicesTest(parameterized.TestCase):
    """The rows a chunk gathers before its loop are exactly each step's slice of its epoch."""

    @parameterized.parameters(
        # (num_examples, batch, first step, num_steps, epoch of the carried permutation)
        (60, 5, 0, 3, 0),  # inside one epoch, the carried permutation reused
        (60, 5, 10, 5, 0),  # crosses one epoch boundary (12 steps per epoch)
        (60, 5, 11, 13, 0),  # ends exactly at a boundary + 1, spans 3 epochs
        (62, 5, 23, 1, 1),  # a partial last batch is dropped; the last step of epoch 1
        (20, 5, 7, 30, 1),  # many short epochs: the batched path
        (20, 5, 8, 4, 2),  # exactly one whole epoch
    )
    def test_matches_each_steps_slice_of_its_epoch_permutation(
        self, num, batch, first, num_steps, perm_epoch
    ):
        data_key = jax.random.key(3)
        per_epoch = num // batch
        perm = steps.epoch_permutation(data_key, perm_epoch, num)
        fn = jax.jit(steps.chunk_indices, static_argnums=(4, 5, 6))
        idx, last_perm, last = fn(
            jnp.asarray(first),
            perm,
            jnp.asarray(perm_epoch, jnp.int32),
            data_key,
            num,
            num_steps,
            batch,
        )
        for j in range(num_steps):
            t = first + j
            expected = steps.epoch_permutation(data_key, t // per_epoch, num)
            start = (t % per_epoch) * batch
            np.testing.assert_array_equal(idx[j], expected[start : start + batch], err_msg=f't={t}')
        t_last = first + num_steps - 1
        self.assertEqual(int(last), t_last // per_epoch)
        np.testing.assert_array_equal(
            last_perm, steps.epoch_permutation(data_key, t_last // per_epoch, num)
        )


class TrainStepTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.run_ = trainer.Run(_config())
        self.step_fn = jax.jit(functools.partial(steps.train_step, static=self.run_.static))

    def _batch(self):
        data = self.run_.train_data
        images = input_transform.to_model_input(data['image'][:BATCH], self.run_.input_spec)
        return images, jnp.asarray(data['label'][:BATCH])

    def test_one_step_updates_every_parameter(self):
        state = self.run_.create_train_state()
        images, labels = self._batch()
        new, metrics = self.step_fn(state, images, labels, self.run_.loop_key, jnp.asarray(1.0))
        self.assertEqual(int(new.step), int(state.step) + 1)
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new.params, state.params)
        self.assertTrue(all(jax.tree.leaves(changed)), changed)
        for key in ('loss', 'recon', 'kl', 'elbo', 'beta', 'grad_norm', 'skipped'):
            self.assertIn(key, metrics)
            self.assertEqual(metrics[key].shape, ())
            self.assertTrue(np.isfinite(metrics[key]), key)
        self.assertGreater(float(metrics['grad_norm']), 0.0)
        self.assertEqual(float(metrics['skipped']), 0.0)
        # The loss is recon + beta * KL with beta = 1 and no warm-up.
        np.testing.assert_allclose(metrics['loss'], metrics['recon'] + metrics['kl'], rtol=1e-5)

    def test_same_inputs_give_identical_outputs(self):
        state = self.run_.create_train_state()
        images, labels = self._batch()
        args = (state, images, labels, self.run_.loop_key, jnp.asarray(1.0))
        first = jax.device_get(self.step_fn(*args))
        second = jax.device_get(self.step_fn(*args))
        jax.tree.map(np.testing.assert_array_equal, first, second)
        # A different step number draws different noise (fold_in(loop_key, step)).
        later = jax.device_get(self.step_fn(state.replace(step=state.step + 1), *args[1:]))
        self.assertNotEqual(float(later[1]['loss']), float(first[1]['loss']))

    def test_grad_norm_is_the_norm_of_the_loss_gradient(self):
        state = self.run_.create_train_state()
        images, labels = self._batch()
        beta = jnp.asarray(1.0)
        _, metrics = self.step_fn(state, images, labels, self.run_.loop_key, beta)

        # The same gradient, taken independently of train_step, normed in float64 by numpy.
        def loss(params):
            terms, _ = steps.batch_terms(
                params, state.batch_stats, jax.random.fold_in(self.run_.loop_key, state.step),
                images, labels, beta, apply_fn=state.apply_fn, static=self.run_.static,
                train=True,
            )  # fmt: skip
            return jnp.mean(terms['loss'])

        leaves = jax.tree.leaves(jax.grad(loss)(state.params))
        expected = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in leaves))
        np.testing.assert_allclose(metrics['grad_norm'], expected, rtol=1e-5)

    def test_global_norm_equals_float64_reference(self):
        tree = {'a': jax.random.normal(jax.random.key(0), (784, 200)), 'b': [jnp.arange(3.0)]}
        expected = np.sqrt(
            sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree))
        )
        np.testing.assert_allclose(steps.global_norm(tree), expected, rtol=1e-6)
        self.assertEqual(float(steps.global_norm({})), 0.0)

    def test_train_step_compiles_once_over_three_calls(self):
        traces = []

        def counting(*args, **kwargs):
            traces.append(None)  # Runs only while tracing.
            return steps.train_step(*args, **kwargs)

        fn = jax.jit(functools.partial(counting, static=self.run_.static))
        state = self.run_.create_train_state()
        images, labels = self._batch()
        for i in range(3):
            # New state, new batch and a new beta each call: all traced values, one compile.
            state, metrics = fn(state, images[::-1] if i % 2 else images, labels,
                                self.run_.loop_key, jnp.asarray(1.0 + i))  # fmt: skip
            self.assertTrue(np.isfinite(metrics['loss']))
        self.assertEqual(int(state.step), 3)
        self.assertLen(traces, 1)


if __name__ == '__main__':
    absltest.main()
