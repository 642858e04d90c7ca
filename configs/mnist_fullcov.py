"""Dense VAE with a full-covariance Gaussian posterior on MNIST.

q(z|x) = N(mu(x), L(x) L(x)^T) with L lower-triangular (softplus diagonal, free strictly-lower
part): the encoder head outputs 2D + D(D-1)/2 = 44 values for latent D = 8. Encoder and decoder
784-512-256 (ReLU); likelihood a Gaussian with one learned sigma shared by all pixels (grey
MNIST in [0, 1]); Adam 1e-3, batch 128, 6,000 steps (12.8 epochs).

Run:
  nice -n 5 python -m vae_jax.train --config configs/mnist_fullcov.py \
      --workdir runs/configs/mnist_fullcov --config.input.data_dir=/path/to/tfds
Variants (one override line each):
  Bernoulli decoder (dynamic binarisation, as the IWAE paper):
      --config.model.likelihood=bernoulli --config.input.binarize=dynamic
  Monte-Carlo KL with 10 samples instead of the closed form:
      --config.analytic_kl=False --config.kl_samples=10
  Diagonal posterior for comparison:  --config.model.posterior=diagonal

The analytic KL(N(mu, LL^T) || N(0, I)) = 0.5 (tr(LL^T) + |mu|^2 - D - 2 sum log diag L) is
exact; the Monte-Carlo KL (mean of log q(z) - log p(z) over kl_samples draws) is unbiased for it.

Measured (the commands above, seed 0, a shared 2-core CPU at load average ~15), test split
(10,000 images), 6,000 steps each. ELBOs are positive: a Gaussian on grey pixels is a density.
  analytic KL:             ELBO 328.67 nats (recon -351.14, KL 22.47), IWAE k=10 336.15,
                           per-pixel MSE 0.0236, 8 of 8 active units; 24.4 steps/s, 515 s.
  MC KL, kl_samples=10:    ELBO 328.92 (recon -351.83, KL 22.90), IWAE k=10 336.08;
                           24.3 steps/s, 410 s.
The two estimators reach the same bound to within 0.25 nats (one seed each).
Reconstructions (images/reconstructions.png) are sharp enough to read every digit; prior
samples are mostly recognisable digits with some blurred in-between shapes.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.num_train_steps = 6_000
    c.log_every_steps = 200
    c.eval_every_steps = 3_000
    c.checkpoint_every_steps = 1_000
    c.steps_per_call = 200
    c.loop = 'scan'
    c.analytic_kl = True
    c.kl_samples = 1

    c.input.dataset = 'mnist'
    c.input.binarize = 'none'
    c.input.batch_size = 128
    c.input.eval_batch_size = 500

    c.model.latent_dim = 8
    c.model.encoder = 'dense(512)-relu-dense(256)-relu'
    c.model.decoder = 'dense(256)-relu-dense(512)-relu-dense(out)'
    c.model.posterior = 'full'
    c.model.scale_transform = 'softplus'
    c.model.likelihood = 'gaussian'
    c.model.gaussian_sigma = 'learned'
    c.model.sigma = 1.0  # initial value of the learned sigma

    c.optim.name = 'adam'
    c.optim.learning_rate = 1e-3
    return c
