"""The config schema: every key of a vae_jax run, with its default and what it means.

`get_config()` is the one place the keys are defined. Experiment configs (configs/*.py in the
repository) start from it and change values, so the locked config rejects a misspelt key at
parse time; `vae_jax.load` fills keys that an older run's config.json lacks from it.

An objective's options are top-level keys. Their defaults and allowed values are declared with
the objective (`vae_jax.objectives`); tests/objectives_test.py checks that the defaults here
equal the declared ones.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # The objective: a name in vae_jax/objectives.py's registry, 'elbo' | 'iwae' |
    # 'autoencoder' | 'miwae' | 'ciwae' | 'piwae' | 'beta_tcvae' | 'dip_vae_i' | 'dip_vae_ii' |
    # 'annealed_vae' | 'factor_vae'. The options of each objective
    # follow (top-level keys; their defaults and allowed values are declared with the objective).
    c.objective = 'elbo'
    c.beta = 1.0  # KL weight (beta-VAE); traced, so sweeping it does not recompile.
    c.beta_warmup_steps = 0  # linear 0 -> beta over this many steps; 0 = constant beta.
    # elbo, iwae, miwae, ciwae, piwae: samples per example (IWAE k, the Monte-Carlo ELBO's k,
    # the zoo's total number of samples). Static.
    c.k_samples = 1
    c.analytic_kl = True  # elbo only: closed-form KL where it exists, else Monte Carlo.
    c.kl_samples = 1  # elbo only: Monte-Carlo KL samples when analytic_kl is False. Static.
    c.free_bits = 0.0  # elbo only: minimum KL (nats) per latent dimension in the loss.
    c.gradient_estimator = 'reparam'  # iwae only: 'reparam' | 'stl' | 'dreg'
    # The zoo's objectives (Rainforth et al. 2018; Chen et al. 2018): beta stays the weight on
    # log p(z) - log q(z|x) inside the log-weights, and for beta_tcvae it is the total-correlation
    # weight.
    c.miwae_m = 1  # miwae: M groups of k_samples / M samples (M divides k_samples). Static.
    c.ciwae_beta = 0.5  # ciwae: weight of the ELBO in beta * ELBO + (1 - beta) * IWAE, in [0, 1]
    c.piwae_m = 1  # piwae: the encoder's IWAE group size M (divides k_samples). Static.
    c.tcvae_alpha = 1.0  # beta_tcvae: weight on the index-code mutual information
    c.tcvae_gamma = 1.0  # beta_tcvae: weight on the dimension-wise KL
    c.tcvae_estimator = 'mws'  # beta_tcvae: 'mws' (minibatch weighted) | 'mss' (stratified)
    # DIP-VAE (Kumar et al. 2018): recon + beta KL + lambda_od sum offdiag(C)^2
    # + lambda_d sum (diag(C) - 1)^2, C the batch's aggregate-posterior covariance;
    # lambda_d = factor * lambda_od (disentanglement_lib's parameterisation and factors).
    c.dip_lambda_od = 10.0  # dip_vae_i, dip_vae_ii: lambda_od
    c.dip_i_lambda_d_factor = 10.0  # dip_vae_i: lambda_d / lambda_od
    c.dip_ii_lambda_d_factor = 1.0  # dip_vae_ii: lambda_d / lambda_od
    # AnnealedVAE (Burgess et al. 2018): recon + gamma |KL - C(step)|, C linear 0 -> c_max.
    c.annealed_gamma = 1000.0  # annealed_vae: gamma
    c.annealed_c_max = 25.0  # annealed_vae: final capacity C, nats
    c.annealed_capacity_steps = 100_000  # annealed_vae: steps of the rise (0: c_max throughout)
    # FactorVAE (Kim & Mnih 2018): recon + beta KL + gamma TC, the TC estimated by a
    # discriminator (an MLP on z, leaky ReLU 0.2, 2 logits) that trains with its own Adam.
    c.factor_gamma = 35.0  # factor_vae: gamma
    c.factor_discriminator_layers = 6  # factor_vae: hidden layers of the discriminator
    c.factor_discriminator_width = 1000  # factor_vae: units per hidden layer
    c.factor_discriminator_learning_rate = 1e-4  # factor_vae: the discriminator's Adam
    c.factor_discriminator_b1 = 0.5
    c.factor_discriminator_b2 = 0.9

    c.num_train_steps = 6_000
    c.log_every_steps = 100
    c.eval_every_steps = 2_000
    c.checkpoint_every_steps = 2_000
    c.keep_checkpoints = 3
    c.steps_per_call = 100  # optimizer steps per jitted call (docs/how_it_works.md).
    c.loop = 'scan'  # 'scan' | 'unroll': how the steps of one call are compiled.
    c.eval_k_samples = (1, 10)  # IWAE bounds reported at each eval as eval/iwae_k{K}.
    c.num_eval_examples = config_dict.placeholder(int)  # None = the whole test split.
    c.skip_nonfinite_updates = False  # True: drop a step whose loss/grad is NaN/inf.

    c.input = ml_collections.ConfigDict()
    # mnist | fashion_mnist | binarized_mnist | digits | eight_gaussians | two_moons | pinwheel
    # | checkerboard | npz (your own arrays, input.path) | tfds:<name> (any TFDS image set).
    c.input.dataset = 'digits'
    # npz only: file with train_images, test_images [N, H, W(, C)] (uint8 0..255, bool, or
    # float in [0, 1]) and optional train_labels, test_labels [N]. A relative path counts from
    # the directory the command runs in.
    c.input.path = config_dict.placeholder(str)
    # TFDS data dir. Unset (recommended, so a run names its data but not a machine's folder):
    # $TFDS_DATA_DIR, else ~/tensorflow_datasets.
    c.input.data_dir = config_dict.placeholder(str)
    c.input.download = False  # TFDS sets: True lets TFDS download and prepare (needs internet).
    c.input.batch_size = 64
    # How training batches reach the step (vae_jax/streaming.py): 'device' (the train split on
    # the devices, sharded along examples over several, batches gathered there), 'stream' (Grain
    # reads each step's rows from the data set's files, memory-mapped .npz or TFDS array_record,
    # in the same order; each process reads only its own devices' rows), or 'auto' ('device'
    # when one device's part of the train split, ceil(N / devices) rows as stored, fits
    # input.device_budget_gb, else 'stream'). The same config trains the same parameters either
    # way.
    c.input.pipeline = 'auto'
    c.input.device_budget_gb = (
        4.0  # 'auto': the most of the train split (GB = 1e9 bytes) kept on one device
    )
    c.input.eval_batch_size = 500
    c.input.binarize = 'none'  # 'none' | 'static' | 'dynamic' (fresh draw at every use)
    c.input.pad_to_32 = False
    c.input.num_train_examples = config_dict.placeholder(int)  # truncate (tests, quick looks)
    c.input.num_test_examples = config_dict.placeholder(int)
    c.input.toy_num_examples = 20_000  # toy 2-D sets: points per split
    c.input.toy_noise = 0.2
    # Recorded by the trainer at the start of an npz / tfds:<name> run (leave unset): one
    # example's shape after preprocessing, and the number of label classes (0: no labels), so
    # the run's config.json rebuilds the model without the data.
    c.input.data_shape = config_dict.placeholder(tuple)
    c.input.num_classes = config_dict.placeholder(int)

    c.model = ml_collections.ConfigDict()
    c.model.latent_dim = 8
    # Layer specs (vae_jax/models.py): tokens joined by '-'. The encoder body is followed by a
    # Dense head for the posterior; `out` in the decoder's last layer is the likelihood's width.
    c.model.encoder = 'dense(256)-relu-dense(128)-relu'
    c.model.decoder = 'dense(128)-relu-dense(256)-relu-dense(out)'
    c.model.posterior = 'diagonal'  # 'diagonal' | 'full'
    c.model.scale_transform = 'softplus'  # 'softplus' | 'exp'
    c.model.likelihood = 'continuous_bernoulli'  # 'bernoulli' | 'continuous_bernoulli' | 'gaussian'
    c.model.gaussian_sigma = 'fixed'  # 'fixed' | 'learned' | 'per_pixel'
    c.model.sigma = 1.0  # gaussian 'fixed' sigma (initial value for 'learned')
    c.model.use_labels = False  # conditional VAE: one-hot label into encoder and decoder
    c.model.num_classes = 10
    c.model.batch_norm_momentum = 0.99
    # Prior p(z) of the layer-spec model (vae_jax/priors.py): 'standard_normal' | 'mog' (learned
    # mixture of Gaussians) | 'vamp' (VampPrior: the posterior at learned pseudo-inputs).
    c.model.prior = ml_collections.ConfigDict()
    c.model.prior.name = 'standard_normal'
    c.model.prior.num_components = 10  # mixture components / pseudo-inputs ('mog', 'vamp')
    # Your own model: a Flax Linen or NNX module that follows the model protocol
    # (vae_jax.models.LatentVariableModel), as 'package.module:ClassName', built with
    # `module_kwargs` (an NNX module also with rngs=nnx.Rngs(params=<int from the seed>)).
    # None = the layer-spec model above. A module defines its own posterior, likelihood and
    # prior, so the layer-spec keys above (encoder, decoder, latent_dim, posterior, likelihood,
    # prior, ...) do not apply to it. Set module_kwargs in a config file
    # (`c.model.module_kwargs = ml_collections.ConfigDict(dict(latent_dim=8))`); the command
    # line can then change their values.
    c.model.module = config_dict.placeholder(str)
    c.model.module_kwargs = ml_collections.ConfigDict()
    # Recorded by the trainer (leave unset): a model passed from Python
    # (`trainer.train_and_evaluate(config, workdir, model=...)`), as
    # 'package.module:Class(field=value, ...)'. With model.module set too (its class imports and
    # its fields rebuild it) every entry point rebuilds it; otherwise they refuse the run unless
    # the model is passed again (`vae_jax.load(workdir, model=...)`). A resume or a load with
    # `model=` checks that it is this one. None: the model came from this config.
    c.model.passed_from_python = config_dict.placeholder(str)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = 'adam'  # 'adam' | 'adamw' | 'rmsprop' | 'sgd'
    c.optim.learning_rate = 1e-3
    c.optim.schedule = 'constant'  # 'constant' | 'cosine' | 'stages'
    c.optim.warmup_steps = 0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.momentum = 0.0  # rmsprop / sgd
    c.optim.grad_clip_norm = config_dict.placeholder(float)
    # 'stages' (IWAE paper): stage i lasts stage_base**i epochs at learning_rate * stage_decay**i.
    c.optim.num_stages = 8
    c.optim.stage_base = 3
    c.optim.stage_decay = 10 ** (-1 / 7)

    # Vectorised sweep (vae_jax/sweep.py): when either is set, train.py trains the cross product
    # of these values as N models in one program (stacked parameters, one vmapped jitted chunk),
    # each written to <workdir>/beta=<b>,seed=<s> exactly as a separate run with that beta and
    # seed would be. Comma-separated; unset = the single value of `beta` / `seed` above.
    c.sweep = ml_collections.ConfigDict()
    c.sweep.beta = config_dict.placeholder(str)  # e.g. '0.5,1,2,4'
    c.sweep.seed = config_dict.placeholder(str)  # e.g. '0,1,2'

    # Where the log rows go (vae_jax/writers.py), comma-separated: jsonl (metrics.jsonl, the
    # run's record: always on) | tensorboard | mlflow | wandb. Every writer gets the config, the
    # same rows at the same steps, the pictures and eval.json's numbers; a resumed run continues
    # its tracker runs. mlflow / wandb need `pip install 'vae_jax[mlflow]'` / `'vae_jax[wandb]'`.
    # May change between invocations (the run resumes).
    c.logging = ml_collections.ConfigDict()
    c.logging.writers = 'jsonl,tensorboard'
    c.logging.mlflow = ml_collections.ConfigDict()
    # None: $MLFLOW_TRACKING_URI, else sqlite:///<workdir>/mlflow.db (a sweep: its directory).
    c.logging.mlflow.tracking_uri = config_dict.placeholder(str)
    c.logging.mlflow.experiment = 'vae_jax'
    c.logging.wandb = ml_collections.ConfigDict()
    c.logging.wandb.project = 'vae_jax'
    c.logging.wandb.entity = config_dict.placeholder(str)  # None: your W&B default entity
    c.logging.wandb.mode = config_dict.placeholder(str)  # None: $WANDB_MODE | online | offline
    return c
