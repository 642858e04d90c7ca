"""FactorVAE (Kim & Mnih 2018) on dSprites at 32x32: ELBO + gamma TC, TC from a discriminator.

The protocol of configs/dsprites_beta_vae.py (`base()`: network, data, batch 64, Adam at 1e-3,
30,000 steps) with objective 'factor_vae': beta = 1, gamma = 35 (disentanglement_lib's value for
dSprites; Kim & Mnih report 10-40), and the paper's discriminator: 6 hidden layers of 1000
leaky-ReLU units on z, 2 logits, trained by its own Adam (lr 1e-4, b1 0.5, b2 0.9) on the first
half of each batch's codes against the permuted codes of the second half
(vae_jax/factor_vae.py). The discriminator (5 million parameters) is larger than the VAE, so a
step costs several times a beta-VAE step.

Run:
  python -m vae_jax.train --config configs/dsprites_factor_vae.py \
      --workdir runs/dsprites/factor_vae
Expected (mean +- sd over seeds 0, 1, 2; experiments/disentanglement/README.md): MIG 0.079 +- 0.052,
  FactorVAE score 0.562 +- 0.077, reconstruction 24.51 +- 0.23 nats, KL 9.40 +- 0.40 nats.
"""

import ml_collections

from configs import dsprites_beta_vae


def get_config() -> ml_collections.ConfigDict:
    c = dsprites_beta_vae.base()
    c.objective = 'factor_vae'
    c.beta = 1.0
    c.factor_gamma = 35.0
    c.factor_discriminator_layers = 6
    c.factor_discriminator_width = 1000
    c.factor_discriminator_learning_rate = 1e-4
    c.factor_discriminator_b1 = 0.5
    c.factor_discriminator_b2 = 0.9
    return c
