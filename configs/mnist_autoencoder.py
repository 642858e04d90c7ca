"""Deterministic 784-256-64-2 sigmoid autoencoder on MNIST, trained with MSE (the baseline).

Encoder Dense(256)-sigmoid-Dense(64)-sigmoid-Dense(2) (linear code, the automatic head);
decoder Dense(64)-sigmoid-Dense(256)-sigmoid-Dense(784)-sigmoid, reshaped to 28x28x1. Objective
'autoencoder': z = encoder(x), loss = -log p(x | z) under a Gaussian with FIXED sigma, which is
mean-squared error up to a constant: with sigma^2 = 784 / 2 = 392,
  -log p(x|z) = sum_i (x_i - xhat_i)^2 / (2 * 392) + 392 log(2 pi 392)
             = mean_i (x_i - xhat_i)^2 + 3061.18,
i.e. exactly Keras's `mse` (mean over the 784 pixels) plus a constant, so the gradients equal
Keras's. RMSprop(5e-4), decay 0.9, eps 1e-14 (see below), batch 128, 10,000 steps (21 epochs).

Run:
  nice -n 5 python -m vae_jax.train --config configs/mnist_autoencoder.py \
      --workdir runs/configs/mnist_autoencoder --config.input.data_dir=/path/to/tfds
(the run ends with images/latent_scatter.png and images/manifold.png among its pictures.)

Differences from the source notebook:
- The 2-D code is linear: encoders end in the automatic Dense head, which has no activation.
- RMSprop's eps: optax adds it inside the square root, 1 / sqrt(nu + eps); Keras outside,
  1 / (sqrt(nu) + eps). Keras's 1e-7 is optax's 1e-14. With optax eps = 1e-7 the denominator
  never drops below 3e-4, far above this loss's ~1e-5 gradients: that run (measured) never left
  the mean image (test MSE 0.0675; the test images' variance about their mean image is 0.0674).
eval.json: 'recon' is -log p(x|z) = MSE + 3061.18; 'recon_error' is the per-pixel MSE;
'elbo', 'kl' and the IWAE bounds do not exist for a point-mass code and are null.

Measured (the command above, seed 0, a shared 2-core CPU at load average ~15):
  10,000 steps; test split (10,000 images): MSE 0.0405 per pixel (recon 3061.223), 2 of 2
  active code dimensions; 51 train steps/s, wall time 280 s. Reconstructions are blurry but
  mostly the right digit (images/reconstructions.png); images/latent_scatter.png shows 0, 1,
  2, 6 and 7 in separate arms and 3/5/8 and 4/9 overlapping near the centre.
"""

import ml_collections

from configs import default

# -log N(x; xhat, sigma^2) summed over 784 pixels = mean squared error + const for sigma^2 = 392.
MSE_SIGMA = (28 * 28 / 2) ** 0.5


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.objective = 'autoencoder'
    c.num_train_steps = 10_000
    c.log_every_steps = 500
    c.eval_every_steps = 5_000
    c.checkpoint_every_steps = 2_500
    c.steps_per_call = 500
    c.loop = 'scan'
    c.eval_k_samples = (1,)

    c.input.dataset = 'mnist'
    c.input.binarize = 'none'
    c.input.batch_size = 128
    c.input.eval_batch_size = 1_000

    c.model.latent_dim = 2
    c.model.encoder = 'dense(256)-sigmoid-dense(64)-sigmoid'
    # dense(784) rather than dense(out): `out` must be the last token, and the sigmoid follows it.
    c.model.decoder = 'dense(64)-sigmoid-dense(256)-sigmoid-dense(784)-sigmoid'
    c.model.likelihood = 'gaussian'
    c.model.gaussian_sigma = 'fixed'
    c.model.sigma = MSE_SIGMA

    c.optim.name = 'rmsprop'
    c.optim.learning_rate = 5e-4
    # optax adds eps INSIDE the square root (1 / sqrt(nu + eps)), Keras outside (1 / (sqrt(nu) +
    # eps)): eps = 1e-14 here is Keras's 1e-7. With optax's 1e-7 the denominator never falls below
    # 3e-4, far above these ~1e-5 gradients, and the autoencoder stays at the mean image.
    c.optim.eps = 1e-14
    return c
