"""Short dense MNIST runs for sweeps over beta and k (experiments/beta_k_sweep).

The IWAE paper's one-stochastic-layer model (784-200-200-50, tanh, diagonal Gaussian posterior,
Bernoulli decoder, MNIST binarised afresh at every use; configs/iwae_mnist.py) trained briefly:
batch 100, Adam at a constant learning rate 1e-3 for NUM_EPOCHS epochs, so a sweep of several
runs finishes in tens of minutes on 2 CPU cores. Numbers are therefore far from converged (the
paper trains 3,280 epochs); they are for comparing the values of one sweep with each other.

Run (beta sweep, ELBO with analytic KL; and k sweep, IWAE):
  scripts/sweep_beta.sh configs/mnist_dense_sweep.py 0.125 0.25 0.5 1 2 4 --jobs 2 -- \
      --config.input.data_dir=../shared/data/tfds
  scripts/sweep_k.sh configs/mnist_dense_sweep.py 1 5 50 --jobs 2 -- \
      --config.objective=iwae --config.input.data_dir=../shared/data/tfds
Expected: see experiments/beta_k_sweep/README.md.
"""

import ml_collections

from configs import default

STEPS_PER_EPOCH = 60_000 // 100
NUM_EPOCHS = 10


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.objective = 'elbo'
    c.analytic_kl = True
    c.k_samples = 1
    c.num_train_steps = NUM_EPOCHS * STEPS_PER_EPOCH
    c.log_every_steps = STEPS_PER_EPOCH
    c.eval_every_steps = NUM_EPOCHS * STEPS_PER_EPOCH  # at the end only (eval with k=50 is slow)
    c.checkpoint_every_steps = 5 * STEPS_PER_EPOCH
    c.keep_checkpoints = 1
    c.steps_per_call = 200
    c.eval_k_samples = (1, 5, 50)

    c.input.dataset = 'mnist'
    c.input.binarize = 'dynamic'
    c.input.batch_size = 100
    c.input.eval_batch_size = 500

    c.model.latent_dim = 50
    c.model.encoder = 'dense(200)-tanh-dense(200)-tanh'
    c.model.decoder = 'dense(200)-tanh-dense(200)-tanh-dense(out)'
    c.model.posterior = 'diagonal'
    c.model.scale_transform = 'exp'
    c.model.likelihood = 'bernoulli'

    c.optim.name = 'adam'
    c.optim.learning_rate = 1e-3
    c.optim.eps = 1e-4
    c.optim.schedule = 'constant'
    return c
