"""DIP-VAE-I (Kumar et al. 2018) on dSprites at 32x32: ELBO + moment matching of Cov[mu(x)].

The protocol of configs/dsprites_beta_vae.py with objective 'dip_vae_i': lambda_od = 10,
lambda_d = 10 lambda_od = 100 (Kumar et al.; disentanglement_lib's lambda_d_factor 10).

Run:
  python -m vae_jax.train --config configs/dsprites_dip_vae_i.py --workdir runs/dsprites/dip_vae_i
Expected (mean +- sd over seeds 0, 1, 2; experiments/disentanglement/README.md): MIG 0.055 +- 0.049,
  FactorVAE score 0.462 +- 0.098, reconstruction 25.64 +- 0.43 nats, KL 12.97 +- 0.12 nats.
"""

import ml_collections

from configs import dsprites_beta_vae


def get_config() -> ml_collections.ConfigDict:
    c = dsprites_beta_vae.base()
    c.objective = 'dip_vae_i'
    c.dip_lambda_od = 10.0
    c.dip_i_lambda_d_factor = 10.0
    return c
