"""beta-TCVAE (Chen et al. 2018) on dSprites at 32x32: the total correlation weighted by beta.

The protocol of configs/dsprites_beta_vae.py with objective 'beta_tcvae', beta = 6 (the TC
weight; the middle of disentanglement_lib's sweep 1, 2, 4, 6, 8, 10), alpha = gamma = 1, the
minibatch-weighted ('mws') estimator of the aggregate posterior.

Run:
  python -m vae_jax.train --config configs/dsprites_beta_tcvae.py \
      --workdir runs/dsprites/beta_tcvae
Expected (mean +- sd over seeds 0, 1, 2; experiments/disentanglement/README.md): MIG 0.131 +- 0.090,
  FactorVAE score 0.518 +- 0.053, reconstruction 27.94 +- 0.47 nats, KL 7.17 +- 0.08 nats.
"""

import ml_collections

from configs import dsprites_beta_vae


def get_config() -> ml_collections.ConfigDict:
    c = dsprites_beta_vae.base()
    c.objective = 'beta_tcvae'
    c.beta = 6.0
    c.tcvae_estimator = 'mws'
    return c
