"""The IWAE paper's one-stochastic-layer MNIST model (Burda, Grosse & Salakhutdinov, 2016).

784-200-200-50 with tanh units both ways, diagonal Gaussian posterior, Bernoulli decoder,
standard-normal prior; MNIST's 60,000 training images binarised afresh at every use; Adam
(beta2 0.999, eps 1e-4), batch 20; 3,280 passes in 8 stages of 3^i epochs (i = 0..7) at learning
rate 0.001 * 10^(-i/7). The paper's table rows are `objective` x `k_samples`:

Run (IWAE, k=5):
  python -m vae_jax.train --config configs/iwae_mnist.py --workdir runs/iwae_mnist/iwae_k5 \
      --config.objective=iwae --config.k_samples=5 --config.input.data_dir=/path/to/tfds
VAE rows use --config.objective=elbo (k-sample Monte-Carlo ELBO, as the paper's VAE).
Then: python -m vae_jax.evaluate --workdir runs/iwae_mnist/iwae_k5 --k_samples 5000
Expected (paper, test NLL in nats, k = 1 / 5 / 50): VAE 86.76 / 86.47 / 86.35,
IWAE 86.76 / 85.54 / 84.78. Ours: see experiments/iwae_mnist/README.md.
"""

import ml_collections

from configs import default

STEPS_PER_EPOCH = 60_000 // 20
NUM_EPOCHS = sum(3**i for i in range(8))  # 3,280 passes


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.objective = 'iwae'
    c.k_samples = 1
    # The paper's VAE bound is the average of the k log-weights (no closed-form KL).
    c.analytic_kl = False
    c.num_train_steps = NUM_EPOCHS * STEPS_PER_EPOCH  # 9,840,000
    c.log_every_steps = STEPS_PER_EPOCH
    c.eval_every_steps = 30 * STEPS_PER_EPOCH
    c.checkpoint_every_steps = 10 * STEPS_PER_EPOCH
    c.keep_checkpoints = 2
    c.steps_per_call = 1_000
    c.eval_k_samples = (1, 5, 50)

    c.input.dataset = 'mnist'
    c.input.binarize = 'dynamic'
    c.input.batch_size = 20
    c.input.eval_batch_size = 1_000

    c.model.latent_dim = 50
    c.model.encoder = 'dense(200)-tanh-dense(200)-tanh'
    c.model.decoder = 'dense(200)-tanh-dense(200)-tanh-dense(out)'
    c.model.posterior = 'diagonal'
    c.model.scale_transform = 'exp'
    c.model.likelihood = 'bernoulli'

    c.optim.name = 'adam'
    c.optim.learning_rate = 1e-3
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-4
    c.optim.schedule = 'stages'
    c.optim.num_stages = 8
    c.optim.stage_base = 3
    c.optim.stage_decay = 10 ** (-1 / 7)
    return c
