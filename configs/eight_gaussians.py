"""beta-VAE (beta = 4) on the 2-D eight-Gaussians toy set: a dense SELU net, latent 2.

Data: 8 Gaussians (std 0.2) on a radius-5 circle, 20,000 points per split (made in code, no
download). Encoder and decoder three Dense(512)-SELU layers; latent 2, diagonal Gaussian
posterior; likelihood a Gaussian with one learned sigma; beta = 4, Adam 3e-4, batch 32.

Run:
  nice -n 5 python -m vae_jax.train --config configs/eight_gaussians.py \
      --workdir runs/eight_gaussians
  python -m vae_jax.evaluate --workdir runs/eight_gaussians --k_samples 1000  # toy_density.png

Measured (RESULT_EIGHT_GAUSSIANS).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.beta = 4.0
    c.num_train_steps = 20_000
    c.log_every_steps = 500
    c.eval_every_steps = 10_000
    c.checkpoint_every_steps = 5_000
    c.steps_per_call = 500
    c.loop = 'scan'

    c.input.dataset = 'eight_gaussians'
    c.input.binarize = 'none'
    c.input.batch_size = 32
    c.input.eval_batch_size = 1_000
    c.input.toy_num_examples = 20_000
    c.input.toy_noise = 0.2

    c.model.latent_dim = 2
    c.model.encoder = '[dense(512)-selu]x3'
    c.model.decoder = '[dense(512)-selu]x3-dense(out)'
    c.model.posterior = 'diagonal'
    c.model.likelihood = 'gaussian'
    c.model.gaussian_sigma = 'learned'
    c.model.sigma = 1.0  # initial value

    c.optim.name = 'adam'
    c.optim.learning_rate = 3e-4
    return c
