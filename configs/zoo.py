"""The model zoo on one protocol: every model of experiments/zoo/ as `configs/zoo.py:<model>`.

Dynamically binarised MNIST, the IWAE paper's 784-200-200-50 tanh network (two-layer models:
its two-layer network, vae_jax/two_layer.py), batch 20, Adam (beta2 0.999, eps 1e-4) with the
paper's learning rates for its first four stages: 3^i passes at 0.001 * 10^(-i/7), i = 0..3,
40 passes (120,000 steps); at most 8 importance samples per example per step. Four stages, not
five (121 passes), to keep the budget near one ~3-hour session on a 2-core machine: measured
there, one row of 121 passes trains in 12-75 minutes (k=1 to PIWAE k=8), 14 rows about 5 hours
two at a time before evaluation; at 40 passes a row trains in 11-34 minutes, and with its
k=5000 evaluation (8-18 minutes) the 14 rows took 3 hours two at a time (experiments/zoo/).
`--config.optim.num_stages=5 --config.num_train_steps=363000` gives the five-stage budget.

Models (`MODELS`): vae, beta_vae (beta = 2), iwae (k = 5), iwae_dreg (k = 5, DReG gradients),
autoencoder, miwae (M = 2 groups of 4), ciwae (k = 8, ciwae_beta = 0.5), piwae (k = 8, encoder
IWAE-4 groups), beta_tcvae (TC weight beta = 2), iaf (2 IAF steps), mog (10-component learned
mixture prior), vamp (VampPrior, 100 pseudo-inputs), two_layer_vae, two_layer_iwae (k = 5).

Run (one model):
  python -m vae_jax.train --config configs/zoo.py:miwae --workdir runs/zoo/miwae \
      --config.input.data_dir=/path/to/tfds
  python -m vae_jax.evaluate --workdir runs/zoo/miwae --k_samples 5000
All of them: experiments/zoo/run.sh (the table is experiments/zoo/README.md).
Expected: test NLL (k = 5000) around 90 nats after 40 passes (IWAE k=5 at
590 passes of the full schedule measured 86.62 in experiments/iwae_mnist); the measured table is
written into experiments/zoo/README.md by experiments/zoo/report.py.
"""

import ml_collections

from configs import iwae_mnist, iwae_mnist_2layer

STEPS_PER_EPOCH = 60_000 // 20
NUM_STAGES = 4
NUM_EPOCHS = sum(3**i for i in range(NUM_STAGES))  # 40 passes

MODELS = (
    'vae',
    'beta_vae',
    'iwae',
    'iwae_dreg',
    'autoencoder',
    'miwae',
    'ciwae',
    'piwae',
    'beta_tcvae',
    'iaf',
    'mog',
    'vamp',
    'two_layer_vae',
    'two_layer_iwae',
)


def _base() -> ml_collections.ConfigDict:
    """The IWAE-paper protocol (configs/iwae_mnist.py) cut to its first four stages."""
    c = iwae_mnist.get_config()
    c.objective = 'elbo'  # The IWAE paper's VAE: a Monte-Carlo ELBO (analytic_kl stays False).
    c.num_train_steps = NUM_EPOCHS * STEPS_PER_EPOCH
    c.eval_every_steps = 10 * STEPS_PER_EPOCH  # 4 test evaluations during training
    c.checkpoint_every_steps = 10 * STEPS_PER_EPOCH
    c.keep_checkpoints = 1
    c.eval_k_samples = (1, 50)
    c.optim.num_stages = NUM_STAGES
    return c


def get_config(model: str = 'vae') -> ml_collections.ConfigDict:
    """The zoo config of `model` (one of `MODELS`).

    Raises:
        ValueError: an unknown model name.
    """
    if model not in MODELS:
        raise ValueError(f'configs/zoo.py:{model}: the model is not one of {MODELS}.')
    c = _base()
    if model == 'beta_vae':
        c.beta = 2.0
    elif model in ('iwae', 'iwae_dreg', 'two_layer_iwae'):
        c.objective = 'iwae'
        c.k_samples = 5
        if model == 'iwae_dreg':
            c.gradient_estimator = 'dreg'
    elif model == 'autoencoder':
        c.objective = 'autoencoder'
    elif model == 'miwae':
        c.objective, c.k_samples, c.miwae_m = 'miwae', 8, 2
    elif model == 'ciwae':
        c.objective, c.k_samples, c.ciwae_beta = 'ciwae', 8, 0.5
    elif model == 'piwae':
        c.objective, c.k_samples, c.piwae_m = 'piwae', 8, 4
    elif model == 'beta_tcvae':
        c.objective, c.beta = 'beta_tcvae', 2.0
    elif model == 'mog':
        c.model.prior.name, c.model.prior.num_components = 'mog', 10
    elif model == 'vamp':
        c.model.prior.name, c.model.prior.num_components = 'vamp', 100
        # KL warm-up over the first 4 passes (the schedule's first two stages), as Tomczak &
        # Welling train it. Without it the posterior collapsed within 1,000 steps (KL 0, no
        # active unit, NLL 206.6 after 40 passes): an encoder that ignores x makes the
        # VampPrior, built from that encoder, equal to every posterior.
        c.beta_warmup_steps = 4 * STEPS_PER_EPOCH
    if model == 'iaf':
        c.model.module = 'vae_jax.flows:IAFVAE'
        c.model.module_kwargs = ml_collections.ConfigDict(
            dict(
                latent_dim=50,
                encoder_dims=(200, 200),
                decoder_dims=(200, 200),
                context_dim=50,
                flow_steps=2,
                flow_hidden_dims=(200,),
                forget_bias=1.0,
            )
        )
    elif model.startswith('two_layer'):
        two_layer = iwae_mnist_2layer.get_config().model
        c.model.module, c.model.module_kwargs = two_layer.module, two_layer.module_kwargs
    return c
