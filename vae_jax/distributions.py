"""Posteriors q(z|x), priors p(z) and likelihoods p(x|z) as distrax distributions.

Everything here maps raw network outputs (unconstrained float32 arrays) to distributions; nothing
is learned here. Conventions (see losses.py for how they are used):

- Posteriors have event shape [D] and batch shape [...] = the leading axes of their parameters.
- Likelihoods have event shape = the data shape (the last `event_ndims` axes) and batch shape =
  the leading axes, so decoding z [K, D] gives a distribution with batch [K].
- `ContinuousBernoulli` is written in its natural (logit) parameter t: log p(x) = t x - A(t) with
  the log-normaliser A(t) = log((e^t - 1) / t), evaluated stably for every t (Taylor series near
  t = 0, log-space forms elsewhere).
"""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

POSTERIORS = ('diagonal', 'full', 'delta')
SCALE_TRANSFORMS = ('softplus', 'exp')
LIKELIHOODS = ('bernoulli', 'continuous_bernoulli', 'gaussian')
GAUSSIAN_SIGMAS = ('fixed', 'learned', 'per_pixel')

# Floor on a learned Gaussian likelihood scale: without it a decoder can drive sigma -> 0 on
# constant pixels (e.g. MNIST borders) and the log-likelihood diverges.
GAUSSIAN_MIN_SCALE = 1e-3

# |logit| below which the continuous Bernoulli uses Taylor series; at |t| = 1 the truncation
# error is < 1e-8, and above it the closed forms (and their gradients) lose little to
# cancellation (near t = 0 they lose everything).
_CB_TAYLOR_CUTOFF = 1.0
# |logit| below which the inverse CDF uses its Taylor series (truncation error < 1e-8 at the
# cutoff); above it the closed form's gradient loses at most ~4e-6 to cancellation.
_CB_SAMPLE_CUTOFF = 0.1
# |logit| below which the CDF uses its first-order expansion (error O(t^2) < 1e-8).
_CB_CDF_CUTOFF = 1e-4


# ---------------------------------------------------------------------------------------------
# Posteriors and prior.


def posterior_num_params(posterior: str, latent_dim: int) -> int:
    """Number of encoder outputs P that parameterise a posterior over D latents.

    Args:
        posterior: 'diagonal' (2D), 'full' (2D + D(D-1)/2) or 'delta' (D).
        latent_dim: D.

    Returns:
        P.

    Raises:
        ValueError: unknown posterior.
    """
    d = latent_dim
    if posterior == 'diagonal':
        return 2 * d
    if posterior == 'full':
        return 2 * d + d * (d - 1) // 2
    if posterior == 'delta':
        return d
    raise ValueError(f'model.posterior={posterior!r} is not one of {POSTERIORS}.')


def _latent_dim(posterior: str, num_params: int) -> int:
    """Inverts `posterior_num_params`; raises ValueError when no D fits."""
    if posterior == 'diagonal':
        d = num_params // 2
    elif posterior == 'full':  # P = D (D + 3) / 2
        d = int(round((-3 + math.sqrt(9 + 8 * num_params)) / 2))
    else:
        d = num_params
    if d < 1 or posterior_num_params(posterior, d) != num_params:
        raise ValueError(
            f'A {posterior!r} posterior cannot have {num_params} parameters on the last axis '
            f'(it needs posterior_num_params({posterior!r}, D) for some D >= 1).'
        )
    return d


def scale_transform_fn(name: str):
    """The positive map used for posterior scales.

    Args:
        name: 'softplus' or 'exp'.

    Returns:
        A function [...] -> [...] with positive outputs.

    Raises:
        ValueError: unknown name.
    """
    if name == 'softplus':
        return jax.nn.softplus
    if name == 'exp':
        return jnp.exp
    raise ValueError(f'model.scale_transform={name!r} is not one of {SCALE_TRANSFORMS}.')


def make_posterior(
    posterior: str, params: jax.Array, *, scale_transform: str = 'softplus'
) -> distrax.Distribution:
    """Builds q(z|x) from encoder outputs.

    Layout of the last axis of `params` (D latents):
    - 'diagonal': [loc (D), raw scale (D)]; scale = transform(raw) (MultivariateNormalDiag).
    - 'full': [loc (D), raw diagonal of L (D), strictly-lower entries of L (D(D-1)/2)];
      the strictly-lower entries fill `np.tril_indices(D, -1)` in row-major order, the diagonal
      is transform(raw) > 0, covariance = L L^T (MultivariateNormalTri).
    - 'delta': [loc (D)]; a point mass at loc (autoencoder code; no KL exists).

    Args:
        posterior: 'diagonal' | 'full' | 'delta'.
        params: [..., P] float32 encoder outputs, P = posterior_num_params(posterior, D).
        scale_transform: 'softplus' | 'exp'.

    Returns:
        A distribution with event shape [D] and batch shape [...].

    Raises:
        ValueError: unknown posterior/transform or a last axis that fits no D.
    """
    if posterior not in POSTERIORS:
        raise ValueError(f'model.posterior={posterior!r} is not one of {POSTERIORS}.')
    transform = scale_transform_fn(scale_transform)
    params = jnp.asarray(params)
    if params.ndim < 1:
        raise ValueError(f'Posterior parameters need a last axis, got shape {params.shape}.')
    d = _latent_dim(posterior, params.shape[-1])
    loc = params[..., :d]
    if posterior == 'delta':
        return distrax.Independent(distrax.Deterministic(loc), reinterpreted_batch_ndims=1)
    scale_diag = transform(params[..., d : 2 * d])
    if posterior == 'diagonal':
        return distrax.MultivariateNormalDiag(loc=loc, scale_diag=scale_diag)
    rows, cols = np.tril_indices(d, -1)
    scale_tri = jnp.zeros(params.shape[:-1] + (d, d), params.dtype)
    scale_tri = scale_tri.at[..., rows, cols].set(params[..., 2 * d :])
    diag = np.arange(d)
    scale_tri = scale_tri.at[..., diag, diag].set(scale_diag)
    return distrax.MultivariateNormalTri(loc=loc, scale_tri=scale_tri, is_lower=True)


def stop_gradient(q: distrax.Distribution) -> distrax.Distribution:
    """q rebuilt from stop-gradient copies of its parameters: the same density, no parameter path.

    Sticking-the-landing and DReG need log q(z; sg(phi)) with z still live. Mapping
    `jax.lax.stop_gradient` over q's pytree leaves is NOT enough: a distrax
    `MultivariateNormalDiag` keeps bound methods of its scale bijector in its static pytree data,
    so the "stopped" copy's `log_prob` still differentiates through the original scale. So each
    family is rebuilt here from its raw parameters, stopped before the distribution exists.

    A distribution of another family can opt in by defining a method
    `stop_gradient_parameters(self) -> distrax.Distribution` that does the same.

    Args:
        q: a posterior, event [D], batch [...]: MultivariateNormalDiag, MultivariateNormalTri,
            or any distribution with a `stop_gradient_parameters` method.

    Returns:
        A distribution of the same family, batch and event shape whose parameters carry no
        gradient.

    Raises:
        ValueError: q's family is not known here and has no `stop_gradient_parameters`.
    """
    sg = jax.lax.stop_gradient
    if hasattr(q, 'stop_gradient_parameters'):
        return q.stop_gradient_parameters()
    if isinstance(q, distrax.MultivariateNormalDiag):
        return distrax.MultivariateNormalDiag(loc=sg(q.loc), scale_diag=sg(q.scale_diag))
    if isinstance(q, distrax.MultivariateNormalTri):
        return distrax.MultivariateNormalTri(
            loc=sg(q.loc), scale_tri=sg(q.scale_tri), is_lower=q.is_lower
        )
    raise ValueError(
        f'Cannot stop the variational parameters of a {type(q).__name__} posterior (needed by '
        "gradient_estimator='stl' and 'dreg'): known families are MultivariateNormalDiag and "
        'MultivariateNormalTri; give the distribution a stop_gradient_parameters() method that '
        'rebuilds it from stop-gradient parameters.'
    )


def standard_normal_prior(latent_dim: int) -> distrax.Distribution:
    """p(z) = N(0, I_D): event shape [D], batch shape []."""
    return distrax.MultivariateNormalDiag(
        loc=jnp.zeros((latent_dim,), jnp.float32), scale_diag=jnp.ones((latent_dim,), jnp.float32)
    )


# ---------------------------------------------------------------------------------------------
# Likelihoods.


def likelihood_num_channels(likelihood: str, gaussian_sigma: str) -> int:
    """How many decoder outputs C per data value the likelihood needs.

    Args:
        likelihood: 'bernoulli' | 'continuous_bernoulli' | 'gaussian'.
        gaussian_sigma: 'fixed' | 'learned' | 'per_pixel' (used for 'gaussian' only).

    Returns:
        1 for logits or a Gaussian mean alone; 2 for a Gaussian mean and raw scale.

    Raises:
        ValueError: unknown likelihood or gaussian_sigma.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f'model.likelihood={likelihood!r} is not one of {LIKELIHOODS}.')
    if likelihood != 'gaussian':
        return 1
    if gaussian_sigma not in GAUSSIAN_SIGMAS:
        raise ValueError(
            f'model.gaussian_sigma={gaussian_sigma!r} is not one of {GAUSSIAN_SIGMAS}.'
        )
    return 1 if gaussian_sigma == 'fixed' else 2


def gaussian_scale(raw: jax.Array) -> jax.Array:
    """Learned Gaussian likelihood scale: softplus(raw) + GAUSSIAN_MIN_SCALE, [...] -> [...]."""
    return jax.nn.softplus(raw) + GAUSSIAN_MIN_SCALE


def inverse_gaussian_scale(sigma: float) -> float:
    """The raw value r with gaussian_scale(r) == sigma (to initialise a 'learned' sigma).

    Args:
        sigma: target scale, > GAUSSIAN_MIN_SCALE.

    Returns:
        r as a Python float.

    Raises:
        ValueError: sigma <= GAUSSIAN_MIN_SCALE.
    """
    s = float(sigma) - GAUSSIAN_MIN_SCALE
    if s <= 0:
        raise ValueError(
            f'model.sigma={sigma} must exceed GAUSSIAN_MIN_SCALE={GAUSSIAN_MIN_SCALE}.'
        )
    return s + math.log(-math.expm1(-s))  # softplus^-1(s), stable for large and small s.


class BernoulliLogits(distrax.Bernoulli):
    """distrax.Bernoulli with a cheaper log_prob: l x - max(l, 0) - log1p(exp(-|l|)).

    Equal to distrax's (1 - x) log sigmoid(-l) + x log sigmoid(l) for every x (it is
    l x - softplus(l), and softplus(l) - softplus(-l) = l), with one exp and one log1p per pixel
    and no multiply_no_nan. On XLA:CPU the likelihood term dominates the IWAE paper's MLP step:
    value and gradient over [128, 784] logits took 271 us this way, 315 us as
    `l x - jax.nn.softplus(l)` and 895 us with distrax's own (fastest of 30 interleaved rounds on
    a loaded 2-core machine; benchmarks/profile.md).
    """

    def log_prob(self, value: jax.Array) -> jax.Array:
        logits = self.logits
        # Stable softplus: max(l, 0) + log1p(exp(-|l|)) never overflows. -|l| is written as
        # min(l, -l) so that the gradient at l = 0 is sigmoid(0) = 0.5 (JAX's abs has slope 1
        # at 0, which would give 0 there; maximum and minimum split a tie evenly).
        softplus = jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(jnp.minimum(logits, -logits)))
        return value.astype(logits.dtype) * logits - softplus


def make_likelihood(
    likelihood: str,
    params: jax.Array,
    *,
    event_ndims: int,
    gaussian_sigma: str = 'fixed',
    sigma: float = 1.0,
) -> distrax.Distribution:
    """Builds p(x|z) from decoder outputs.

    Args:
        likelihood: 'bernoulli' (logits), 'continuous_bernoulli' (logits) or 'gaussian'.
        params: [..., *event_shape[:-1], C * m] float32 decoder outputs, where m is the last data
            axis and C = likelihood_num_channels(likelihood, gaussian_sigma). For C = 2 the first
            m entries are the Gaussian mean and the last m the raw scale, mapped by
            `gaussian_scale` (softplus plus a floor of GAUSSIAN_MIN_SCALE).
        event_ndims: number of trailing axes that form one data point (3 for [H, W, C] images).
        gaussian_sigma: 'fixed' (scale = sigma), 'learned' or 'per_pixel' (scale from params;
            for 'learned' the model broadcasts one scalar into the second half).
        sigma: the fixed Gaussian scale.

    Returns:
        A distribution with batch shape params.shape[:-event_ndims] and event shape
        params.shape[-event_ndims:] with the last axis divided by C. `.mean()` is what a
        picture shows (for the continuous Bernoulli its true mean, not sigmoid(logits)).

    Raises:
        ValueError: unknown names, bad event_ndims, or a last axis not divisible by C.
    """
    num_channels = likelihood_num_channels(likelihood, gaussian_sigma)
    params = jnp.asarray(params)
    if not 1 <= event_ndims <= params.ndim:
        raise ValueError(
            f'event_ndims={event_ndims} must be in [1, params.ndim] for params of shape '
            f'{params.shape}.'
        )
    if params.shape[-1] % num_channels:
        raise ValueError(
            f'A {likelihood!r} likelihood with gaussian_sigma={gaussian_sigma!r} needs '
            f'{num_channels} decoder outputs per data value, but the last axis of the decoder '
            f'output has odd size: shape {params.shape}.'
        )
    if likelihood in ('bernoulli', 'continuous_bernoulli'):
        arrays = {'logits': params}
    elif num_channels == 1:
        arrays = {'loc': params, 'scale': jnp.full(params.shape, sigma, params.dtype)}
    else:
        m = params.shape[-1] // 2
        arrays = {'loc': params[..., :m], 'scale': gaussian_scale(params[..., m:])}

    def build(arrays):
        if likelihood == 'bernoulli':
            return BernoulliLogits(logits=arrays['logits'], dtype=params.dtype)
        if likelihood == 'continuous_bernoulli':
            return ContinuousBernoulli(logits=arrays['logits'])
        return distrax.Normal(**arrays)

    batch_ndims = params.ndim - event_ndims
    flat = build({k: v.reshape(*v.shape[:batch_ndims], -1) for k, v in arrays.items()})
    return Likelihood(build(arrays), event_ndims, flat)


class Likelihood(distrax.Independent):
    """p(x|z): `distrax.Independent` over the event axes that scores on the event as one axis.

    XLA:CPU vectorises elementwise loops along the minor-most axis, which for [H, W, 1] images
    has size 1: the Bernoulli log-likelihood's value and gradient over [20, 50, 28, 28, 1]
    logits took 11.8 ms against 1.1 ms over the same logits as [20, 50, 784] (one thread,
    fastest of 30), most of the IWAE-paper step at k = 50. `log_prob` therefore merges the
    event axes first (a free reshape); everything else (mean, sample, ...) is the
    `distrax.Independent` of the event-shaped distribution.
    """

    def __init__(
        self,
        distribution: distrax.Distribution,
        event_ndims: int,
        flat: distrax.Distribution,
    ):
        """Args: distribution: batch shape [..., *event]; event_ndims: how many trailing axes
        form one data point; flat: the same distribution with those axes merged into one."""
        super().__init__(distribution, reinterpreted_batch_ndims=event_ndims)
        self._flat = flat

    def log_prob(self, value: jax.Array) -> jax.Array:
        """[...] log p(value) for value [..., *event]."""
        n = self.reinterpreted_batch_ndims
        value = jnp.asarray(value)
        return jnp.sum(self._flat.log_prob(value.reshape(*value.shape[: value.ndim - n], -1)), -1)


def check_support(likelihood: str, data: np.ndarray) -> None:
    """Fails loudly when data lie outside the likelihood's support.

    Args:
        likelihood: 'bernoulli' (support {0, 1}), 'continuous_bernoulli' ([0, 1]) or 'gaussian'
            (all reals).
        data: [N, ...] the data set (numpy).

    Raises:
        ValueError: naming the likelihood, the data range and the allowed support; also for
            non-finite values and unknown likelihoods.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f'model.likelihood={likelihood!r} is not one of {LIKELIHOODS}.')
    data = np.asarray(data)
    if data.size == 0:
        return
    finite = np.isfinite(data)
    if not finite.all():
        raise ValueError(
            f'model.likelihood={likelihood!r}: the data contain {int((~finite).sum())} '
            'non-finite values (NaN or inf).'
        )
    lo, hi = float(data.min()), float(data.max())
    if likelihood == 'bernoulli':
        bad = (data != 0) & (data != 1)
        if bad.any():
            raise ValueError(bernoulli_support_message(int(bad.sum()), lo, hi, data[bad][0]))
    elif likelihood == 'continuous_bernoulli' and (lo < 0 or hi > 1):
        raise ValueError(
            "model.likelihood='continuous_bernoulli' needs data in [0, 1], but the data range "
            f"is [{lo:g}, {hi:g}]. Rescale the data or use likelihood='gaussian'."
        )


def bernoulli_support_message(num_bad: int, lo: float, hi: float, example: float) -> str:
    """`check_support`'s message for data outside {0, 1} (also built from 8-bit data's counts).

    Args:
      num_bad: how many values are neither 0 nor 1.
      lo: the smallest value of the data.
      hi: the largest value of the data.
      example: the first such value (C order).
    """
    return (
        f"model.likelihood='bernoulli' needs data in {{0, 1}}, but {num_bad} "
        f'values are not (data range [{float(lo):g}, {float(hi):g}], e.g. {float(example):g}). '
        "Binarize the data (input.binarize='static' or 'dynamic') or use "
        "likelihood='continuous_bernoulli'."
    )


# ---------------------------------------------------------------------------------------------
# Continuous Bernoulli.


def _where_small(t, cutoff, small_fn, large_fn):
    """small_fn(t) where |t| < cutoff else large_fn(t), with NaN-free gradients in both branches."""
    small = jnp.abs(t) < cutoff
    # Double-where: each branch only ever sees inputs where it is well defined, so the unused
    # branch cannot put 0 * inf = NaN into the gradient.
    t_small = jnp.where(small, t, jnp.zeros_like(t))
    t_large = jnp.where(small, jnp.full_like(t, 2 * cutoff), t)
    return jnp.where(small, small_fn(t_small), large_fn(t_large))


def cb_log_normalizer(logits: jax.Array) -> jax.Array:
    """A(t) = log((e^t - 1) / t), the continuous Bernoulli log-normaliser, [...] -> [...].

    In the paper's parameter lambda = sigmoid(t): log C(lambda) = -A(t) - log(1 - lambda).
    """

    def small(t):  # A(t) = t/2 + log(sinh(t/2) / (t/2)), Bernoulli-number series.
        t2 = t * t
        return t / 2 + t2 * (1 / 24 + t2 * (-1 / 2880 + t2 * (1 / 181440 - t2 / 9676800)))

    def large(t):  # max(t, 0) + log((1 - e^-|t|) / |t|): no overflow for any t.
        a = jnp.abs(t)
        return jnp.maximum(t, 0) + jnp.log(-jnp.expm1(-a)) - jnp.log(a)

    return _where_small(logits, _CB_TAYLOR_CUTOFF, small, large)


def cb_mean(logits: jax.Array) -> jax.Array:
    """E[x] = A'(t) = 1 / (1 - e^-t) - 1 / t, stable for every t, [...] -> [...]."""

    def small(t):
        t2 = t * t
        return 0.5 + t * (
            1 / 12 + t2 * (-1 / 720 + t2 * (1 / 30240 + t2 * (-1 / 1209600 + t2 / 47900160)))
        )

    def large(t):  # 1/2 + (coth(t/2) - 2/t) / 2; tanh saturates instead of overflowing.
        return 0.5 + 0.5 / jnp.tanh(t / 2) - 1 / t

    return _where_small(logits, _CB_TAYLOR_CUTOFF, small, large)


def cb_variance(logits: jax.Array) -> jax.Array:
    """Var[x] = A''(t) = 1/t^2 - 1 / (4 sinh^2(t/2)), stable for every t, [...] -> [...]."""

    def small(t):
        u2 = (t / 2) ** 2
        return 0.25 * (1 / 3 + u2 * (-1 / 15 + u2 * (2 / 189 + u2 * (-1 / 675 + u2 * 2 / 10395))))

    def large(t):  # sinh overflows to inf for |t| > 178, which correctly gives 1 / t^2.
        return 1 / (t * t) - 0.25 / jnp.square(jnp.sinh(t / 2))

    return _where_small(logits, _CB_TAYLOR_CUTOFF, small, large)


def _cb_cdf_nonpositive(a, x):
    """CDF expm1(a x) / expm1(a) for a <= 0 (never overflows)."""
    return _where_small(
        a,
        _CB_CDF_CUTOFF,
        lambda a: x + a * x * (x - 1) / 2,
        lambda a: jnp.expm1(a * x) / jnp.expm1(a),
    )


def _cb_icdf_nonpositive(a, u):
    """Inverse CDF log1p(u expm1(a)) / a for a <= 0 (never overflows)."""

    def small(a):
        # log1p(u expm1(a)) is the cumulant generating function of Bernoulli(u), so
        # G = sum_n kappa_n a^(n-1) / n! with the Bernoulli cumulants kappa_n.
        v = u * (1 - u)
        k3 = v * (1 - 2 * u)
        k4 = v * (1 - 6 * v)
        k5 = k3 * (1 - 12 * v)
        return u + a * (v / 2 + a * (k3 / 6 + a * (k4 / 24 + a * k5 / 120)))

    return _where_small(a, _CB_SAMPLE_CUTOFF, small, lambda a: jnp.log1p(u * jnp.expm1(a)) / a)


class ContinuousBernoulli(distrax.Distribution):
    """Continuous Bernoulli on [0, 1], parameterised by logits (Loaiza-Ganem & Cunningham, 2019).

    p(x | t) = exp(t x - A(t)) with A(t) = log((e^t - 1) / t); in the paper's parameter
    lambda = sigmoid(t), p(x) = C(lambda) lambda^x (1 - lambda)^(1 - x). Event shape [], batch
    shape = logits.shape. log_prob does not check the support; see `check_support`.

    References: Loaiza-Ganem & Cunningham, "The continuous Bernoulli: fixing a pervasive error in
    variational autoencoders", NeurIPS 2019.
    """

    def __init__(self, logits: jax.Array):
        """Args: logits: [...] float natural parameters t (any real, including 0)."""
        super().__init__()
        self._logits = jnp.asarray(logits)

    @property
    def logits(self) -> jax.Array:
        """[...] natural parameters t."""
        return self._logits

    @property
    def probs(self) -> jax.Array:
        """[...] the paper's lambda = sigmoid(t) (NOT the mean)."""
        return jax.nn.sigmoid(self._logits)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self._logits.shape

    def log_prob(self, value: jax.Array) -> jax.Array:
        """log p(value), value broadcastable to the batch shape without rank promotion."""
        return self._logits * value - cb_log_normalizer(self._logits)

    def mean(self) -> jax.Array:
        return cb_mean(self._logits)

    def variance(self) -> jax.Array:
        return cb_variance(self._logits)

    def entropy(self) -> jax.Array:
        return cb_log_normalizer(self._logits) - self._logits * cb_mean(self._logits)

    def cdf(self, value: jax.Array) -> jax.Array:
        """P(X <= value); uses F_t(x) = 1 - F_{-t}(1 - x) so only t <= 0 is ever evaluated."""
        x = jnp.clip(value, 0.0, 1.0)
        t = self._logits
        flip = t > 0
        # where, not -abs(t): abs has derivative +1 at t = 0, which would flip the gradient sign.
        neg = _cb_cdf_nonpositive(jnp.where(flip, -t, t), jnp.where(flip, 1 - x, x))
        return jnp.where(flip, 1 - neg, neg)

    def log_cdf(self, value: jax.Array) -> jax.Array:
        return jnp.log(self.cdf(value))

    def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
        """Inverse-CDF samples [n, *batch], differentiable in the logits (reparameterised)."""
        t = self._logits
        u = jax.random.uniform(key, (n,) + t.shape, t.dtype)
        # X ~ CB(t) iff 1 - X ~ CB(-t): only the overflow-free t <= 0 form is evaluated.
        flip = t > 0
        # where, not -abs(t): abs has derivative +1 at t = 0, which would flip the gradient sign.
        a = jnp.where(flip, -t, t)[None]
        y = _cb_icdf_nonpositive(a, jnp.where(flip[None], 1 - u, u))
        return jnp.clip(jnp.where(flip[None], 1 - y, y), 0.0, 1.0)

    def __getitem__(self, index) -> 'ContinuousBernoulli':
        return ContinuousBernoulli(logits=self._logits[index])  # event shape is [].


def kl_continuous_bernoulli(
    dist1: ContinuousBernoulli, dist2: ContinuousBernoulli, *unused_args, **unused_kwargs
) -> jax.Array:
    """KL(CB(t1) || CB(t2)) = (t1 - t2) mean(t1) - A(t1) + A(t2), batchwise [...]."""
    t1, t2 = dist1.logits, dist2.logits
    return (t1 - t2) * cb_mean(t1) - cb_log_normalizer(t1) + cb_log_normalizer(t2)


tfp.distributions.RegisterKL(ContinuousBernoulli, ContinuousBernoulli)(kl_continuous_bernoulli)
