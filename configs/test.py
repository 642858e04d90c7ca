"""A tiny config for tests: digits, a small dense VAE, a few dozen steps.

Run: python -m vae_jax.train --config configs/test.py --workdir /tmp/vae_test
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.num_train_steps = 12
    c.log_every_steps = 3
    c.eval_every_steps = 6
    c.checkpoint_every_steps = 6
    c.steps_per_call = 3
    c.eval_k_samples = (1, 4)
    c.input.batch_size = 16
    c.input.eval_batch_size = 64
    c.input.num_test_examples = 100
    c.model.latent_dim = 2
    c.model.encoder = 'dense(16)-relu'
    c.model.decoder = 'dense(16)-relu-dense(out)'
    return c
