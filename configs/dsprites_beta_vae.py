"""beta-VAE on dSprites at 32x32 (`dsprites32`), with the disentanglement metrics at the end.

The shared protocol of the dSprites configs (`base()`; the other configs/dsprites_*.py change the
objective only): 100,000 training images (the library's renderer unless the TFDS `dsprites` set
is prepared in the data dir), 10 latent dimensions, a Bernoulli likelihood, an MLP after Chen et
al. (2018)'s dSprites network scaled to 32x32 inputs (encoder 600-600 ReLU, decoder 600-600-600
tanh), batch 64, Adam at 1e-3, 30,000 steps. beta = 4 (Higgins et al. 2017); beta = 1 is the
plain VAE. At the end, eval.json gets `disentanglement/*` (MIG, DCI, SAP, FactorVAE and beta-VAE
scores at the small end-of-run sizes of `vae_jax.run_eval.DISENTANGLEMENT_SETTINGS`), and
images/ the latent traversals.

Run:
  python -m vae_jax.train --config configs/dsprites_beta_vae.py --workdir runs/dsprites/beta_vae
  python -m vae_jax.evaluate --workdir runs/dsprites/beta_vae --k_samples 0 --disentanglement
Plain VAE: add --config.beta=1. Full resolution: --config.input.dataset=dsprites.
Expected (mean +- sd over seeds 0, 1, 2; experiments/disentanglement/README.md):
  beta 4: MIG 0.146 +- 0.061, FactorVAE score 0.544 +- 0.078, reconstruction 30.30 +- 0.26 nats,
    KL 6.17 +- 0.03 nats;
  beta 1 (the plain VAE): MIG 0.082 +- 0.004, FactorVAE score 0.449 +- 0.067, reconstruction
    24.33 +- 0.15 nats, KL 8.83 +- 0.14 nats.
"""

import ml_collections

from configs import default


def base() -> ml_collections.ConfigDict:
    """The dSprites protocol shared by configs/dsprites_*.py (objective: the ELBO)."""
    c = default.get_config()
    c.objective = 'elbo'
    c.num_train_steps = 30_000
    c.log_every_steps = 500
    c.eval_every_steps = 10_000
    c.checkpoint_every_steps = 5_000
    c.eval_k_samples = (1,)
    c.input.dataset = 'dsprites32'
    c.input.num_train_examples = 100_000
    c.input.num_test_examples = 5_000
    c.input.batch_size = 64
    c.input.eval_batch_size = 500
    c.model.latent_dim = 10
    c.model.encoder = 'dense(600)-relu-dense(600)-relu'
    c.model.decoder = 'dense(600)-tanh-dense(600)-tanh-dense(600)-tanh-dense(out)'
    c.model.posterior = 'diagonal'
    c.model.likelihood = 'bernoulli'
    c.optim.learning_rate = 1e-3
    return c


def get_config() -> ml_collections.ConfigDict:
    c = base()
    c.beta = 4.0
    return c
