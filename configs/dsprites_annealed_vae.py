"""AnnealedVAE (Burgess et al. 2018) on dSprites at 32x32: recon + gamma |KL - C(step)|.

The protocol of configs/dsprites_beta_vae.py with objective 'annealed_vae' and
disentanglement_lib's settings: gamma = 1000, C_max = 25 nats. disentanglement_lib raises C
over 100,000 steps (its whole run had 300,000); this 30,000-step run raises it over the first
10,000 (`annealed_capacity_steps`), the same third of the run.

Run:
  python -m vae_jax.train --config configs/dsprites_annealed_vae.py \
      --workdir runs/dsprites/annealed_vae
Expected (mean +- sd over seeds 0, 1, 2; experiments/disentanglement/README.md): MIG 0.034 +- 0.021,
  FactorVAE score 0.398 +- 0.139, reconstruction 26.54 +- 0.76 nats, KL 25.00 +- 0.32 nats.
"""

import ml_collections

from configs import dsprites_beta_vae


def get_config() -> ml_collections.ConfigDict:
    c = dsprites_beta_vae.base()
    c.objective = 'annealed_vae'
    c.annealed_gamma = 1000.0
    c.annealed_c_max = 25.0
    c.annealed_capacity_steps = 10_000
    return c
