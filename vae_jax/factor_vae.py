"""FactorVAE (Kim & Mnih 2018) as a registered objective with its discriminator as an aux network.

loss = recon + beta KL + gamma TC(z), where the total correlation
TC(z) = KL(q(z) || prod_j q(z_j)) of the batch's latent samples is estimated by a discriminator
D between samples of q(z) and of the product of its marginals (the density-ratio trick):
TC ~ mean_b [D(z_b)_0 - D(z_b)_1] (`disentangle_objectives.total_correlation`). D is a second
network with its own optimizer (`registry.AuxNetwork` 'discriminator'), a parameter group of the
train state (`state.aux['discriminator']`, vae_jax/aux_networks.py) that checkpoints and resume
carry like the model's parameters.

One train step, both updates from the same state (as disentanglement_lib does; the paper
alternates them):
- the VAE step: each example's one-sample ELBO terms (`log_weights.model_elbo`: the analytic KL
  where a closed form exists) plus gamma times D's TC estimate on the whole batch's codes z
  (reparameterised samples, the same draws as the reconstruction's). D's parameters are inputs,
  not differentiated: the VAE step does not train D.
- the discriminator step: cross-entropy of D on the first half of the batch's codes (class 0,
  samples of q(z)) against `permute_dims` of the second half (class 1, samples of
  prod_j q(z_j)), the codes stopped: D's step does not train the VAE. Kim & Mnih use a second
  batch for the permuted codes; the two halves of one batch are independent draws too, so this
  is the paper's estimator at half the batch, and no second encoder pass (disentanglement_lib
  permutes the same batch it classifies, whose two classes are then not independent).

Defaults: gamma = 35 (disentanglement_lib's unsupervised study, Locatello et al. 2019, sweeps
10-100; Kim & Mnih report 10-40 on dSprites), beta = 1 (config.beta); D an MLP of 6 x 1000
leaky-ReLU (0.2) units and 2 logits, trained by Adam at 1e-4, b1 = 0.5, b2 = 0.9 (Kim & Mnih,
Appendix; also disentanglement_lib's). In evaluation (no discriminator: `vae_jax.load` keeps the
VAE only) the objective reports the ELBO terms without the TC; the discriminator's estimate is
the training metric 'train/tc'.

References: Kim & Mnih (2018), Disentangling by Factorising, ICML; Locatello et al. (2019).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vae_jax import disentangle_objectives, log_weights, registry

Bind = Callable[[jax.Array, jax.Array | None], log_weights.LatentModel]
DISCRIMINATOR = 'discriminator'


def model_factor_vae(
    keys: jax.Array,
    bind: Bind,
    images: jax.Array,
    labels: jax.Array | None,
    *,
    beta: float | jax.Array = 1.0,
    aux: dict[str, Callable[[jax.Array], jax.Array]] | None = None,
    factor_gamma: float = 35.0,
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Negative FactorVAE terms of a batch, per example, and the discriminator's inputs.

    Args:
        keys: [B] one key per example.
        bind: (x, y) -> one example's model, whose latent is one vector z [D].
        images: [B, *event] the (binarised) batch.
        labels: [B] int labels (or None).
        beta: the KL weight (may be traced); 1 is the published objective.
        aux: {'discriminator': codes [N, D] -> logits [N, 2]} with the discriminator's current
            parameters, or None (evaluation: the ELBO terms only, no 'loss' and no 'tc').
        factor_gamma: gamma, the weight of the TC estimate.

    Returns:
        (terms, {'discriminator': codes [B, D], gradient stopped}). terms, each [B]:
        {'loss': recon + beta kl + gamma tc, 'recon', 'kl', 'elbo', 'tc': the batch's TC
        estimate (the same value in every row)}; without `aux` 'recon', 'kl', 'elbo' only.

    Raises:
        ValueError: a model whose latent is not one vector.

    References: Kim & Mnih (2018), eq. (2)-(3).
    """

    def one(key, x, y):
        model = bind(x, y)
        terms = log_weights.model_elbo(key, model)
        # The ELBO's own draw again (same key: the same z; XLA computes it once): its gradient
        # reaches the encoder through the TC term as through the reconstruction.
        z = model.sample(jax.random.clone(key), 1)
        if not isinstance(z, jax.Array) or z.ndim != 2:
            shapes = jax.tree.map(jnp.shape, z)
            raise ValueError(
                "objective='factor_vae' needs a model whose latent is one vector z [D] (its "
                f'discriminator reads z); sample(key, 1) gave {shapes}'
            )
        return terms, z[0]

    labels_in = labels if labels is not None else jnp.zeros(images.shape[:1], jnp.int32)
    terms, codes = jax.vmap(one, axis_name='batch')(keys, images, labels_in)
    recon, kl = terms['recon'], terms['kl']
    out = {'recon': recon, 'kl': kl, 'elbo': terms['elbo']}
    if aux is not None:
        tc = disentangle_objectives.total_correlation(aux[DISCRIMINATOR](codes))
        tc = jnp.broadcast_to(tc, recon.shape)
        out = {'loss': recon + beta * kl + factor_gamma * tc, **out, 'tc': tc}
    return out, {DISCRIMINATOR: jax.lax.stop_gradient(codes)}


def discriminator_step_loss(
    key: jax.Array, apply: Callable[[jax.Array], jax.Array], codes: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The discriminator's loss on one batch of codes: first half q(z), permuted second half.

    Args:
        key: consumed once (the permutation).
        apply: codes [N, D] -> logits [N, 2], the discriminator with the parameters to train.
        codes: [B, D] the batch's latent samples (gradient stopped); B >= 4. With B odd the
            last row is left out, so the two classes have B // 2 rows each.

    Returns:
        (loss [], {'discriminator_loss': loss, 'discriminator_accuracy': the fraction of the
        2 (B // 2) codes classified right}).

    References: Kim & Mnih (2018), Algorithm 1.
    """
    half = codes.shape[0] // 2
    permuted = disentangle_objectives.permute_dims(key, codes[half : 2 * half])
    logits_q, logits_p = apply(codes[:half]), apply(permuted)
    loss = disentangle_objectives.discriminator_loss(logits_q, logits_p)
    right = jnp.concatenate(
        [jnp.argmax(logits_q, axis=-1) == 0, jnp.argmax(logits_p, axis=-1) == 1]
    )
    return loss, {'discriminator_loss': loss, 'discriminator_accuracy': jnp.mean(right)}


def discriminator(
    latent_shapes: Any, *, layers: int = 6, width: int = 1000
) -> disentangle_objectives.Discriminator:
    """FactorVAE's discriminator for the model's latents: `layers` x `width` leaky ReLU, 2 logits.

    Raises:
        ValueError: latents that are not one vector.
    """
    discriminator_input_shape(latent_shapes)
    return disentangle_objectives.Discriminator(hidden=(width,) * layers)


def discriminator_input_shape(latent_shapes: Any) -> tuple[int, ...]:
    """(D,) for a model whose latent is one vector z [D].

    Raises:
        ValueError: any other latents (several, or not one-dimensional).
    """
    shapes = tuple(latent_shapes)
    if len(shapes) != 1 or len(shapes[0][1]) != 1:
        raise ValueError(
            "objective='factor_vae' needs a model whose latent is one vector z [D] (its "
            f'discriminator reads z); this model has latents {dict(shapes)}'
        )
    return tuple(shapes[0][1])


def discriminator_optimizer(
    *, learning_rate: float = 1e-4, b1: float = 0.5, b2: float = 0.9
) -> optax.GradientTransformation:
    """Adam for the discriminator (Kim & Mnih: lr 1e-4, b1 0.5, b2 0.9)."""
    return optax.adam(learning_rate, b1=b1, b2=b2)


# ---------------------------------------------------------------------------------------------
# Registry declarations (vae_jax.objectives).

FACTOR_GAMMA = registry.number(
    'factor_gamma',
    'factor_gamma',
    35.0,
    lambda v: v >= 0,
    'a finite number >= 0',
    "FactorVAE: weight gamma on the discriminator's total-correlation estimate",
    exclusive=True,
)
DISCRIMINATOR_LAYERS = registry.integer(
    'layers',
    'factor_discriminator_layers',
    6,
    1,
    'FactorVAE: hidden layers of the discriminator',
    exclusive=True,
)
DISCRIMINATOR_WIDTH = registry.integer(
    'width',
    'factor_discriminator_width',
    1000,
    1,
    'FactorVAE: units per hidden layer of the discriminator (leaky ReLU 0.2)',
    exclusive=True,
)
DISCRIMINATOR_LEARNING_RATE = registry.number(
    'learning_rate',
    'factor_discriminator_learning_rate',
    1e-4,
    lambda v: v > 0,
    'a finite number > 0',
    "FactorVAE: the discriminator's Adam learning rate",
    exclusive=True,
)
_UNIT = (lambda v: 0 <= v < 1, 'a number in [0, 1)')
DISCRIMINATOR_B1 = registry.number(
    'b1',
    'factor_discriminator_b1',
    0.5,
    *_UNIT,
    "FactorVAE: the discriminator's Adam b1",
    exclusive=True,
)
DISCRIMINATOR_B2 = registry.number(
    'b2',
    'factor_discriminator_b2',
    0.9,
    *_UNIT,
    "FactorVAE: the discriminator's Adam b2",
    exclusive=True,
)


def _check(config: Any) -> None:
    if config.input.batch_size < 4:
        raise ValueError(
            f'config.input.batch_size={config.input.batch_size}: factor_vae trains its '
            'discriminator on two halves of the batch (codes vs permuted codes); allowed: >= 4'
        )


AUX_DISCRIMINATOR = registry.AuxNetwork(
    DISCRIMINATOR,
    discriminator,
    discriminator_input_shape,
    discriminator_optimizer,
    discriminator_step_loss,
    module_options=(DISCRIMINATOR_LAYERS, DISCRIMINATOR_WIDTH),
    optimizer_options=(DISCRIMINATOR_LEARNING_RATE, DISCRIMINATOR_B1, DISCRIMINATOR_B2),
    doc='FactorVAE discriminator: q(z) vs prod_j q(z_j) (Kim & Mnih 2018)',
)

OBJECTIVES = (
    registry.Objective(
        'factor_vae',
        model_factor_vae,
        (FACTOR_GAMMA,),
        per_example=False,
        inputs=('beta', 'aux'),
        check=_check,
        doc='negative FactorVAE: recon + beta KL + gamma TC, TC estimated by a discriminator '
        'trained with its own optimizer (Kim & Mnih 2018)',
        aux=(AUX_DISCRIMINATOR,),
    ),
)
