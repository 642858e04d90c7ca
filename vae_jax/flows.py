"""Inverse autoregressive flow (IAF) posteriors: MADE-masked Flax layers and a sampler.

q(z | x) is a diagonal Gaussian z_0 = loc + scale * eps followed by T IAF steps, each

    (m, s) = MADE(z, h)              autoregressive in z: m_i, s_i depend on z_{<i} and h only
    sigma = sigmoid(s + forget_bias)
    z' = sigma * z + (1 - sigma) * m  (Kingma et al.'s numerically stable, LSTM-type update)

where h is a context vector from the encoder. The Jacobian dz'/dz is triangular with diagonal
sigma, so log |det| = sum_i log sigma_i, and the log-density of the flow's own sample is

    log q(z_T | x) = log N(z_0; loc, scale^2) - sum_t sum_i log sigma_ti.

Successive steps alternate the autoregressive order (1..D, then D..1), which is the reversal
between steps without moving any values. The MADE output layers start at zero, so at
initialisation every step is z' = sigmoid(forget_bias) z (m = 0): the posterior stays Gaussian,
with loc and scale both scaled by sigmoid(forget_bias)^T. `num_steps = 0` is the Gaussian
posterior itself. Modules are deterministic; sampling lives in `sample_and_log_prob`.

References: Kingma et al., 2016 ("Improved variational inference with inverse autoregressive
flow"); Germain et al., 2015 (MADE).
"""

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import two_layer  # the MLP of the IWAE-paper models
from vae_jax.layers import ACTIVATIONS

Array = jax.Array


def input_degrees(latent_dim: int, reverse: bool) -> tuple[int, ...]:
    """MADE degrees of the D inputs: 1..D in order, or D..1 when reversed."""
    degrees = tuple(range(1, latent_dim + 1))
    return degrees[::-1] if reverse else degrees


def hidden_degrees(width: int, latent_dim: int) -> tuple[int, ...]:
    """Degrees 1..D-1 of a hidden layer, assigned cyclically (deterministic)."""
    top = max(latent_dim - 1, 1)
    return tuple(i % top + 1 for i in range(width))


def made_mask(in_degrees, out_degrees, *, strict: bool) -> np.ndarray:
    """[in, out] 0/1 mask: out unit o sees input i iff deg(o) > deg(i) (strict) or >= (not).

    Hidden layers use the non-strict mask, the output layer the strict one, so output i depends
    only on inputs of lower degree: the autoregressive property.
    """
    din, dout = np.asarray(in_degrees)[:, None], np.asarray(out_degrees)[None, :]
    return (dout > din if strict else dout >= din).astype(np.float32)


class MaskedDense(nn.Module):
    """Dense layer whose kernel is multiplied by a fixed MADE mask.

    Attributes:
        in_degrees: degree of each input unit.
        out_degrees: degree of each output unit (len = number of features).
        strict: output-layer mask (deg_out > deg_in) rather than hidden (>=).
        zero_init: start kernel and bias at zero.
    """

    in_degrees: tuple[int, ...]
    out_degrees: tuple[int, ...]
    strict: bool = False
    zero_init: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[..., in] -> [..., out]."""
        if x.shape[-1] != len(self.in_degrees):
            raise ValueError(
                f'MaskedDense expects {len(self.in_degrees)} inputs, got shape {x.shape}.'
            )
        shape = (len(self.in_degrees), len(self.out_degrees))
        init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
        kernel = self.param('kernel', init, shape, jnp.float32)
        bias = self.param('bias', nn.initializers.zeros, shape[1:], jnp.float32)
        mask = jnp.asarray(made_mask(self.in_degrees, self.out_degrees, strict=self.strict))
        return x @ (kernel * mask) + bias.reshape((1,) * (x.ndim - 1) + bias.shape)


class IAFStep(nn.Module):
    """One IAF step: z [..., D], context [H] or [..., H] -> (z' [..., D], log|det dz'/dz| [...]).

    Attributes:
        hidden_dims: widths of the MADE's hidden layers (the context enters the first).
        reverse: autoregressive order D..1 instead of 1..D.
        forget_bias: added to s before the sigmoid; large positive values start near identity.
        activation: a `layers.ACTIVATIONS` name.
    """

    hidden_dims: tuple[int, ...] = (64,)
    reverse: bool = False
    forget_bias: float = 1.0
    activation: str = 'elu'

    @nn.compact
    def __call__(self, z: Array, context: Array) -> tuple[Array, Array]:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f'model.flow_activation={self.activation!r} is not one of {tuple(ACTIVATIONS)}.'
            )
        act = ACTIVATIONS[self.activation]
        d = z.shape[-1]
        context = jnp.broadcast_to(context, z.shape[:-1] + context.shape[-1:])
        z_degrees = input_degrees(d, self.reverse)
        h, degrees = z, z_degrees
        for i, width in enumerate(self.hidden_dims):
            out_degrees = hidden_degrees(width, d)
            h = MaskedDense(degrees, out_degrees, name=f'masked_{i}')(h)
            if i == 0:  # the context is visible to every output: no mask on it
                h = h + nn.Dense(width, use_bias=False, name='context')(context)
            h, degrees = act(h), out_degrees
        m = MaskedDense(degrees, z_degrees, strict=True, zero_init=True, name='m')(h)
        s = MaskedDense(degrees, z_degrees, strict=True, zero_init=True, name='s')(h)
        s = s + self.forget_bias
        sigma = jax.nn.sigmoid(s)
        z_new = sigma * z + (1 - sigma) * m
        return z_new, jnp.sum(jax.nn.log_sigmoid(s), axis=-1)  # log sigma, stable for any s


class IAF(nn.Module):
    """T IAF steps with alternating order: z_0 [..., D], context -> (z_T, sum of log-dets [...]).

    Attributes:
        num_steps: T >= 0; 0 is the identity (log-det 0).
        hidden_dims: MADE hidden widths of every step.
        forget_bias: see `IAFStep`.
        activation: a `layers.ACTIVATIONS` name.
    """

    num_steps: int = 2
    hidden_dims: tuple[int, ...] = (64,)
    forget_bias: float = 1.0
    activation: str = 'elu'

    @nn.compact
    def __call__(self, z: Array, context: Array) -> tuple[Array, Array]:
        """Args: z: [..., D]. context: [H] or [..., H] (broadcast to z's leading axes).

        Returns: (z_T [..., D], log|det dz_T/dz_0| [...]).
        """
        if self.num_steps < 0:
            raise ValueError(f'model.flow_steps={self.num_steps} must be >= 0.')
        log_det = jnp.zeros(z.shape[:-1], z.dtype)
        for t in range(self.num_steps):
            z, step_log_det = IAFStep(
                self.hidden_dims, t % 2 == 1, self.forget_bias, self.activation, name=f'step_{t}'
            )(z, context)
            log_det = log_det + step_log_det
        return z, log_det


def sample_and_log_prob(
    key: Array,
    loc: Array,
    scale: Array,
    context: Array,
    flow: Callable[[Array, Array], tuple[Array, Array]],
    k_samples: int,
) -> tuple[Array, Array]:
    """K samples of an IAF posterior and their log-densities, for one example.

    Args:
        key: PRNG key, consumed once.
        loc: [D] base Gaussian mean.
        scale: [D] base Gaussian standard deviation (> 0).
        context: [H] encoder context h.
        flow: (z_0 [K, D], context [H]) -> (z_T [K, D], log-det [K]), e.g. a bound `IAF.apply`.
        k_samples: K (static).

    Returns:
        (z [K, D], log q(z | x) [K]) = (z_T, log N(z_0; loc, scale^2) - log-det).

    Raises:
        ValueError: loc and scale are not both [D].

    References: Kingma et al., 2016.
    """
    if loc.ndim != 1 or loc.shape != scale.shape:
        raise ValueError(f'loc and scale must both be [D], got {loc.shape} and {scale.shape}.')
    eps = jax.random.normal(key, (k_samples,) + loc.shape, loc.dtype)
    z0 = loc[None] + scale[None] * eps
    z, log_det = flow(z0, context)
    return z, _base_log_prob_of_noise(eps, scale) - log_det


def _base_log_prob_of_noise(eps: Array, scale: Array) -> Array:
    """log N(z0; loc, scale^2) of z0 = loc + scale * eps, from eps [K, D] and scale [D]: [K]."""
    return jnp.sum(
        -0.5 * jnp.square(eps) - jnp.log(scale)[None] - 0.5 * math.log(2 * math.pi), axis=-1
    )


class IAFVAE(nn.Module):
    """A one-layer VAE whose posterior is a Gaussian followed by IAF steps (model protocol).

    Encoder MLP x -> (loc [D], scale = exp(.) [D], context h [H]); z_0 = loc + scale * eps;
    z = IAF(z_0, h); decoder MLP z -> Bernoulli logits over the flattened x; p(z) = N(0, I).
    It follows `models.LatentVariableModel`, with latents {'z': [D], 'z0': [D]}: z is the
    flow's output (the decoder and prior see it) and z0 its base sample, which `log_posterior`
    needs (log q(z | x) = log N(z0; loc, scale^2) - log-det, without inverting the flow). The
    library draws noise for both; `sample_posterior` uses the noise of 'z0' only, the optional
    `sample_prior` (z ~ N(0, I)) that of 'z' only. `decode_mean` is the decoder's Bernoulli mean.

    Gradient estimators: reparameterised only. `log_posterior` reads z0 from the latents, so
    with stopped parameters it is not log q at the stopped flow's inverse of z, which is what
    STL and DReG would need. With the reparameterised estimator the library draws the sample
    and its log q in one pass (`sample_and_log_posterior`), so the encoder and the flow run
    once per step.

    Attributes:
      latent_dim: D.
      encoder_dims: hidden widths of the encoder MLP.
      decoder_dims: hidden widths of the decoder MLP.
      context_dim: H, the size of the context h passed to every IAF step.
      flow_steps: T IAF steps (0: the Gaussian posterior).
      flow_hidden_dims: MADE hidden widths of each step.
      forget_bias: see `IAFStep`.
      activation: a `layers.ACTIVATIONS` name for the encoder and decoder MLPs.
    """

    latent_dim: int = 50
    encoder_dims: tuple[int, ...] = (200, 200)
    decoder_dims: tuple[int, ...] = (200, 200)
    context_dim: int = 50
    flow_steps: int = 2
    flow_hidden_dims: tuple[int, ...] = (200,)
    forget_bias: float = 1.0
    activation: str = 'tanh'

    def setup(self):
        self.encoder = two_layer.MLP(tuple(self.encoder_dims), self.activation)
        self.decoder = two_layer.MLP(tuple(self.decoder_dims), self.activation)
        self.flow = IAF(self.flow_steps, tuple(self.flow_hidden_dims), self.forget_bias, 'elu')

    @property
    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        return {'z': (int(self.latent_dim),), 'z0': (int(self.latent_dim),)}

    def _encode(self, x: Array) -> tuple[Array, Array, Array]:
        d = self.latent_dim
        out = self.encoder(x.reshape(-1), 2 * d + self.context_dim)
        return out[:d], jnp.exp(out[d : 2 * d]), out[2 * d :]

    def sample_posterior(self, x: Array, noise: dict, y=None, train: bool = False) -> dict:
        """noise {'z': [K, D] (unused), 'z0': [K, D]} -> {'z': z_T, 'z0': z_0}."""
        loc, scale, context = self._encode(x)
        z0 = loc[None] + scale[None] * noise['z0']
        z, _ = self.flow(z0, context)
        return {'z': z, 'z0': z0}

    def sample_and_log_posterior(
        self, x: Array, noise: dict, y=None, train: bool = False
    ) -> tuple[dict, Array]:
        """(`sample_posterior`'s z, [K] log q(z|x)) from one encoder and flow pass.

        log q = log N(z0; loc, scale^2) from the noise minus the flow's sum of log sigma.
        """
        loc, scale, context = self._encode(x)
        z0 = loc[None] + scale[None] * noise['z0']
        z, log_det = self.flow(z0, context)
        return {'z': z, 'z0': z0}, _base_log_prob_of_noise(noise['z0'], scale) - log_det

    def log_posterior(self, x: Array, z: dict, y=None, train: bool = False) -> Array:
        """[K] log N(z0; loc, scale^2) - log|det dz/dz0|."""
        loc, scale, context = self._encode(x)
        z0 = z['z0']
        _, log_det = self.flow(z0, context)
        log_q0 = jnp.sum(
            -0.5 * jnp.square((z0 - loc[None]) / scale[None])
            - jnp.log(scale)[None]
            - 0.5 * math.log(2 * math.pi),
            axis=-1,
        )
        return log_q0 - log_det

    def log_likelihood(self, x: Array, z: dict, y=None, train: bool = False) -> Array:
        """[K] log p(x|z), Bernoulli over the flattened x (values in {0, 1})."""
        flat = x.reshape(-1)
        logits = self.decoder(z['z'], flat.shape[0])  # [K, M]
        # x l - softplus(l) = log sigmoid-Bernoulli, stable for any logit.
        return jnp.sum(flat[None] * logits - jax.nn.softplus(logits), -1)

    def log_prior(self, z: dict, y=None, train: bool = False) -> Array:
        """[K] log N(z; 0, I)."""
        return jnp.sum(-0.5 * jnp.square(z['z']) - 0.5 * math.log(2 * math.pi), -1)

    # Optional protocol members (`vae_jax.load(...).sample` and `.reconstruct` use them).

    def sample_prior(self, noise: dict, y=None, train: bool = False) -> dict:
        """noise {'z': [K, D], 'z0': [K, D]} -> {'z': [K, D]} ~ p(z) = N(0, I).

        z0 is the posterior's base sample, not part of p(x, z): it is left out (its noise unused).
        """
        return {'z': noise['z']}

    def decode_mean(self, z: dict, y=None, train: bool = False) -> Array:
        """[K, M] the mean of p(x|z), sigmoid of the Bernoulli logits, over the flattened x."""
        return jax.nn.sigmoid(self.decoder(z['z'], self.decoder.output_width()))
