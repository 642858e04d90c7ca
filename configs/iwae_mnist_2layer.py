"""The IWAE paper's two-stochastic-layer MNIST model (Burda, Grosse & Salakhutdinov, 2016).

q(z1|x): 784-200-200-100, q(z2|z1): 100-100-100-50; p(z1|z2) and p(x|z1) mirror them (tanh units,
diagonal Gaussian latents, Bernoulli output; `vae_jax/two_layer.py`, plugged in through the model
protocol as `model.module`). Everything else as configs/iwae_mnist.py: MNIST binarised afresh at
every use, Adam (eps 1e-4), batch 20, 3,280 passes in 8 stages of 3^i epochs at learning rate
0.001 * 10^(-i/7). The paper's rows are `objective` x `k_samples`.

Run (IWAE, k=5):
  python -m vae_jax.train --config configs/iwae_mnist_2layer.py \
      --workdir runs/iwae_mnist_2layer/iwae_k5 --config.objective=iwae --config.k_samples=5 \
      --config.input.data_dir=/path/to/tfds
VAE rows use --config.objective=elbo (k-sample Monte-Carlo ELBO, as the paper's VAE).
Then: python -m vae_jax.evaluate --workdir runs/iwae_mnist_2layer/iwae_k5 --k_samples 5000
(test NLL through the log-weights of both layers, and active units per layer).
Expected (paper, test NLL in nats, k = 1 / 5 / 50): VAE 85.33 / 85.01 / 84.78,
IWAE 85.33 / 83.89 / 82.90. Ours: not yet run at full length.
"""

import ml_collections

from configs import iwae_mnist


def get_config() -> ml_collections.ConfigDict:
    c = iwae_mnist.get_config()
    c.model.module = 'vae_jax.two_layer:TwoLayerVAE'
    c.model.module_kwargs = ml_collections.ConfigDict(
        dict(
            latent_dims=(100, 50),
            encoder_dims=((200, 200), (100, 100)),
            decoder_dims=((100, 100), (200, 200)),
            activation='tanh',
        )
    )
    return c
