"""Short dense MNIST runs for sweeps over beta and k (experiments/beta_k_sweep).

The IWAE paper's one-stochastic-layer model (784-200-200-50, tanh, diagonal Gaussian posterior,
Bernoulli decoder, MNIST binarised afresh at every use; configs/iwae_mnist.py) trained briefly:
batch 100, Adam at a constant learning rate 1e-3 for NUM_EPOCHS epochs, so a sweep of several
runs finishes in about an hour on 2 (shared) CPU cores. Numbers are therefore far from
converged (the paper trains 3,280 epochs); they are for comparing the values of one sweep with
each other.

Run (beta sweep, ELBO with analytic KL; and k sweep, IWAE; test NLL with k=1000 importance
samples on the first 2,000 test images):
  scripts/sweep_beta.sh configs/mnist_dense_sweep.py 0.125 0.25 0.5 1 2 4 --jobs 2 \
      --runs_root runs/beta_k_sweep --name mnist_beta \
      --evaluate 1000 --evaluate_args '--max_examples 2000' -- \
      --config.input.data_dir=/path/to/tfds
  scripts/sweep_k.sh configs/mnist_dense_sweep.py 50 1 5 --jobs 2 \
      --runs_root runs/beta_k_sweep --name mnist_k \
      --evaluate 1000 --evaluate_args '--max_examples 2000' -- \
      --config.objective=iwae --config.input.data_dir=/path/to/tfds
Expected (10 epochs, seed 0; test NLL in nats): beta 0.125 / 0.25 / 0.5 / 1 / 2 / 4:
119.76 / 107.57 / 102.04 / 101.93 / 111.83 / 125.85 (KL 70.9 down to 6.6); IWAE k = 1 / 5 / 50:
103.53 / 99.34 / 97.61. Tables and plots: experiments/beta_k_sweep/README.md.
"""

import ml_collections

from configs import default, iwae_mnist

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

    c.model = iwae_mnist.get_config().model  # the IWAE paper's one-stochastic-layer model

    c.optim.name = 'adam'
    c.optim.learning_rate = 1e-3
    c.optim.eps = 1e-4
    c.optim.schedule = 'constant'
    return c
