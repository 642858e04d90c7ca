"""The built-in layer-spec models (VAE / CVAE / autoencoder), and building any model.

Any Flax module (Linen, or NNX through `nnx_models.NNXModel`) that follows
`LatentVariableModel` (protocol.py, re-exported here) trains, evaluates and sweeps with
vae_jax: name it in the config (`model.module='my_pkg.my_models:MyVAE'`, keyword arguments
from `model.module_kwargs`) or pass it from Python (`trainer.train_and_evaluate(config,
workdir, model=MyVAE(...))`). `VAE` below is one implementation of the protocol (built from
layer-spec strings, with the priors of `priors.py`), with the optional one-layer capability
(its q, p(x|z) and p(z) as distributions) and `decode_mean`; `two_layer.TwoLayerVAE` and
`flows.IAFVAE` are others.

One module, `VAE`, covers the three models: `model.use_labels` makes it a conditional VAE, and
objective 'autoencoder' gives it a deterministic code (posterior 'delta', P = latent_dim).
Modules hold parameters and deterministic maps only: `encode` returns the posterior's parameters
and `decode` the likelihood's; `distributions.py` turns them into distributions and `losses.py`
samples.

Layer specs (`layers.py` lists the tokens): the encoder body is followed by a Dense head with P
outputs; the decoder's last token may use `out`, meaning the likelihood's size: C * m channels
for `conv(out,...)`/`convt(out,...)` and H * W * C * m units for `dense(out)` (reshaped to
[H, W, C * m]), where C is the data's channel count and m = `likelihood_num_channels` (m = 1 for
the network with gaussian_sigma 'learned': the second half is a learned scalar, broadcast).

`convt` tokens use `layers.ConvTranspose`: flax's parameters and values, but gradients from
plain convolutions (XLA:CPU computes flax's conv-transpose weight gradient 10x+ slower).

Labels (CVAE): one_hot(y) is concatenated to the features where they are first flat: to the
(flattened) input of a dense encoder and to z in the decoder; for a conv encoder, at its `flatten`
(or, without one, after the body, before the head).

Batch axes: `encode` and `decode` take any number of leading batch axes (including none); they
are flattened into one around the body, so Conv and BatchNorm see [B, ...].

BatchNorm and `jax.vmap`: training runs the per-example objective under
`jax.vmap(..., axis_name='batch')` (steps.py), so with `train=True` BatchNorm pools its
statistics over that named axis (`bn_axis_name='batch'`), which gives the same statistics as one
call on the whole batch. To call with `train=True` on a real batch axis outside such a vmap, use
`bn_axis_name=None` (`create_model(..., bn_axis_name=None)` or `model.clone(bn_axis_name=None)`).
Running statistics live in the 'batch_stats' collection (pass `mutable=['batch_stats']` when
training); `train=False` uses them and leaves them unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vae_jax import backends, distributions, nnx_models, priors
from vae_jax import layers as layers_lib
from vae_jax.networks import Decoder, Encoder, _flatten_batch  # noqa: F401 -- re-exported
from vae_jax.protocol import (  # noqa: F401 -- re-exported: models.LatentVariableModel etc.
    OPTIONAL_METHODS,
    PROTOCOL_METHODS,
    LatentVariableModel,
    build_module,
    check_protocol,
    has_one_pass_posterior,
    import_module_class,
    init_all,
)

Array = jax.Array


class VAE(nn.Module):
    """Encoder and decoder with `encode` / `decode` methods over arbitrary leading batch axes.

    Attributes:
      data_shape: one example's shape, [H, W, C] for images or [C] for flat data.
      latent_dim: D.
      encoder: the `model.encoder` spec string.
      decoder: the `model.decoder` spec string.
      num_posterior_params: P (`distributions.posterior_num_params`).
      num_likelihood_channels: m (`distributions.likelihood_num_channels`).
      learned_sigma: Gaussian likelihood with a learned global sigma.
      sigma: its initial value.
      use_labels: conditional VAE on one-hot labels.
      num_classes: L, the size of the one-hot labels.
      batch_norm_momentum: BatchNorm running-average momentum.
      bn_axis_name: BatchNorm's pooling axis name with train=True: 'batch' inside
        `jax.vmap(..., axis_name='batch')`, None for a plain batched call.
      convt_implementation: how `convt` layers compute (`layers.conv_transpose`): 'subpixel'
        (default; fastest gradients under the per-example vmap of training, measured by
        benchmarks/convt_grad.py), 'custom_vjp' (fastest on a plain batch) or 'lax' (flax's).
      posterior, scale_transform: the posterior family (`distributions.make_posterior`).
      likelihood, gaussian_sigma: the likelihood (`distributions.make_likelihood`).
      prior: 'standard_normal' | 'mog' | 'vamp' (`priors.py`).
      num_prior_components: K of the 'mog' / 'vamp' prior.
    """

    data_shape: tuple[int, ...]
    latent_dim: int
    encoder_spec: str
    decoder_spec: str
    num_posterior_params: int
    num_likelihood_channels: int = 1
    learned_sigma: bool = False
    sigma: float = 1.0
    use_labels: bool = False
    num_classes: int = 10
    batch_norm_momentum: float = 0.99
    bn_axis_name: str | None = 'batch'
    convt_implementation: str = 'subpixel'
    posterior: str = 'diagonal'
    scale_transform: str = 'softplus'
    likelihood: str = 'bernoulli'
    gaussian_sigma: str = 'fixed'
    prior: str = 'standard_normal'
    num_prior_components: int = 1

    def setup(self):
        common = dict(
            bn_momentum=self.batch_norm_momentum,
            bn_axis_name=self.bn_axis_name,
            convt_implementation=self.convt_implementation,
        )
        self.encoder = Encoder(
            layers_lib.parse_spec(self.encoder_spec, 'model.encoder'),
            self.num_posterior_params,
            **common,
        )
        self.decoder = Decoder(
            layers_lib.parse_spec(self.decoder_spec, 'model.decoder', allow_out=True),
            tuple(self.data_shape),
            self.num_likelihood_channels,
            self.learned_sigma,
            self.sigma,
            **common,
        )
        if self.prior == 'mog':
            self.prior_mixture = priors.MixturePrior(self.num_prior_components, self.latent_dim)
        elif self.prior == 'vamp':
            self.pseudo_inputs = priors.PseudoInputs(
                self.num_prior_components, tuple(self.data_shape)
            )

    def _one_hot(self, y: Array | None, batch_shape: tuple[int, ...]) -> Array | None:
        if not self.use_labels:
            return None
        if y is None:
            raise ValueError('model.use_labels=True: encode/decode need the labels y')
        y = jnp.asarray(y)
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f'labels y must be integers, got dtype {y.dtype}')
        try:
            y = jnp.broadcast_to(y, batch_shape)
        except ValueError:
            raise ValueError(
                f'labels y of shape {y.shape} do not broadcast to the batch shape {batch_shape}'
            ) from None
        return jax.nn.one_hot(y.reshape(-1), self.num_classes, dtype=jnp.float32)

    def encode(self, x: Array, y: Array | None = None, *, train: bool) -> Array:
        """Posterior parameters.

        Args:
          x: [..., *data_shape] data; any number of leading batch axes, including none.
          y: int labels broadcastable to [...] (used only with use_labels), or None.
          train: BatchNorm uses (and updates) batch statistics when True.

        Returns:
          [..., P] parameters for `distributions.make_posterior`.

        Raises:
          ValueError: if x's trailing shape is not data_shape.
        """
        n = len(self.data_shape)
        if tuple(x.shape[x.ndim - n :]) != tuple(self.data_shape) or x.ndim < n:
            raise ValueError(
                f'encode: x must have shape [..., {", ".join(map(str, self.data_shape))}], '
                f'got {x.shape}'
            )
        flat, batch_shape = _flatten_batch(x, n)
        out = self.encoder(flat, self._one_hot(y, batch_shape), train=train)
        return out.reshape((*batch_shape, out.shape[-1]))

    def decode(self, z: Array, y: Array | None = None, *, train: bool) -> Array:
        """Likelihood parameters.

        Args:
          z: [..., D] latents; any number of leading batch axes, e.g. [K, D] per example.
          y: int labels broadcastable to [...] (used only with use_labels), e.g. [] with z [K, D].
          train: BatchNorm uses (and updates) batch statistics when True.

        Returns:
          [..., *data_shape[:-1], C * m] parameters for `distributions.make_likelihood`.

        Raises:
          ValueError: if z's last axis is not latent_dim.
        """
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ValueError(f'decode: z must have shape [..., {self.latent_dim}], got {z.shape}')
        flat, batch_shape = _flatten_batch(z, 1)
        out = self.decoder(flat, self._one_hot(y, batch_shape), train=train)
        return out.reshape((*batch_shape, *out.shape[1:]))

    def __call__(
        self, x: Array, y: Array | None = None, *, train: bool = False
    ) -> tuple[Array, Array]:
        """Encodes, then decodes the posterior mean (params[..., :D]); used to initialise.

        Args:
          x: [..., *data_shape]. y: labels [...] or None. train: BatchNorm mode.

        Returns:
          (posterior parameters [..., P], likelihood parameters [..., *data_shape[:-1], C * m]).
        """
        params = self.encode(x, y, train=train)
        self.prior_params(train=train)  # creates the prior's parameters at init
        return params, self.decode(params[..., : self.latent_dim], y, train=train)

    def prior_params(self, *, train: bool = False) -> dict[str, Array]:
        """The prior's parameters for `priors.make_prior` ({} for 'standard_normal')."""
        if self.prior == 'mog':
            return self.prior_mixture()
        if self.prior == 'vamp':
            # The pseudo-inputs go through the encoder without labels (no CVAE VampPrior).
            return {'posterior_params': self.encoder(self.pseudo_inputs(), None, train=train)}
        return {}

    # The model protocol (`LatentVariableModel`), for one example x [*data_shape], with the
    # one-layer capability (`protocol.DISTRIBUTION_METHODS`) and `decode_mean`.

    @property
    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        return {'z': (self.latent_dim,)}

    @property
    def standard_normal_prior(self) -> bool:
        """True when p(z) = N(0, I) (free bits and per-dimension KL are defined against it)."""
        return self.prior == 'standard_normal'

    def posterior_distribution(self, x: Array, y: Array | None = None, *, train: bool = False):
        """q(z|x) as a distrax distribution, event [D]."""
        return distributions.make_posterior(
            self.posterior, self.encode(x, y, train=train), scale_transform=self.scale_transform
        )

    def likelihood_distribution(self, z: Array, y: Array | None = None, *, train: bool = False):
        """p(x|z) for z [K, D]: a distrax distribution with batch [K] and event [*data_shape]."""
        return distributions.make_likelihood(
            self.likelihood,
            self.decode(z, y, train=train),
            event_ndims=len(self.data_shape),
            gaussian_sigma=self.gaussian_sigma,
            sigma=self.sigma,
        )

    def prior_distribution(self, *, train: bool = False):
        """p(z) as a distrax distribution, event [D], batch []."""
        return priors.make_prior(
            self.prior,
            self.prior_params(train=train),
            latent_dim=self.latent_dim,
            posterior=self.posterior,
            scale_transform=self.scale_transform,
        )

    def sample_posterior(self, x: Array, noise: Any, y: Array | None = None, train: bool = False):
        """{'z': [K, D]} = q's reparameterisation applied to noise {'z': [K, D]}."""
        q = self.posterior_distribution(x, y, train=train)
        if self.posterior == 'delta':
            return {'z': jnp.broadcast_to(q.mean()[None], noise['z'].shape)}
        return {'z': jax.vmap(q.bijector.forward)(noise['z'])}

    def log_posterior(self, x: Array, z: Any, y: Array | None = None, train: bool = False):
        """[K] log q(z|x)."""
        return jax.vmap(self.posterior_distribution(x, y, train=train).log_prob)(z['z'])

    def log_likelihood(self, x: Array, z: Any, y: Array | None = None, train: bool = False):
        """[K] log p(x|z), one decoder pass over the K samples."""
        px = self.likelihood_distribution(z['z'], y, train=train)
        k = z['z'].shape[0]
        return px.log_prob(jnp.broadcast_to(x, (k, *x.shape)))

    def log_prior(self, z: Any, y: Array | None = None, train: bool = False):
        """[K] log p(z)."""
        return jax.vmap(self.prior_distribution(train=train).log_prob)(z['z'])

    def decode_mean(self, z: Any, y: Array | None = None, train: bool = False) -> Array:
        """The mean of p(x|z) for z {'z': [K, D]}: [K, *data_shape]."""
        return self.likelihood_distribution(z['z'], y, train=train).mean()


def init_variables(
    model: nn.Module, key: Array, data_shape: tuple[int, ...], use_labels: bool
) -> dict[str, Any]:
    """A model's initial variables ({'params', maybe 'batch_stats'}) from `key`.

    `VAE` initialises through `__call__` (the parameters of every existing run); any other
    module through all four protocol methods on a zero example.
    """
    x = jnp.zeros(tuple(data_shape), jnp.float32)
    y = jnp.zeros((), jnp.int32) if use_labels else None
    if isinstance(model, VAE):
        return model.init(key, x, y, train=False)
    return model.init(key, x, y, method=init_all)


def create_model(
    model_config: ml_collections.ConfigDict,
    data_shape: tuple[int, ...],
    objective: str,
    *,
    bn_axis_name: str | None = 'batch',
) -> nn.Module:
    """Builds the model that `config.model` describes and checks its shapes.

    With `model.module` set, the module named there is built with `model.module_kwargs` and
    checked against the protocol (`LatentVariableModel`); otherwise the layer-spec `VAE`.

    Args:
      model_config: `config.model` (keys in configs/default.py).
      data_shape: one example's shape, e.g. (28, 28, 1) or (2,) for toy 2-D data.
      objective: `config.objective`; 'autoencoder' gives a deterministic code (posterior 'delta').
      bn_axis_name: see `VAE`; None to train BatchNorm on a real batch axis outside a vmap.

    Returns:
      An unbound module.

    Raises:
      ValueError: for a malformed layer spec (naming the key, token and allowed tokens), when
        the decoder's output shape does not match data_shape, or when `model.module` cannot be
        imported, built or initialised, or does not follow the protocol.
    """
    c = model_config
    data_shape = tuple(int(d) for d in data_shape)
    if c.module is not None:
        return check_model(
            build_module(c.module, c.module_kwargs.to_dict()),
            data_shape,
            bool(c.use_labels),
            where=f'model.module={c.module!r}',
        )
    posterior = 'delta' if objective == 'autoencoder' else c.posterior
    model = VAE(
        data_shape=data_shape,
        latent_dim=c.latent_dim,
        encoder_spec=c.encoder,
        decoder_spec=c.decoder,
        num_posterior_params=distributions.posterior_num_params(posterior, c.latent_dim),
        num_likelihood_channels=distributions.likelihood_num_channels(
            c.likelihood, c.gaussian_sigma
        ),
        learned_sigma=c.likelihood == 'gaussian' and c.gaussian_sigma == 'learned',
        sigma=float(c.sigma),
        use_labels=bool(c.use_labels),
        num_classes=c.num_classes,
        batch_norm_momentum=float(c.batch_norm_momentum),
        bn_axis_name=bn_axis_name,
        posterior=posterior,
        scale_transform=c.scale_transform,
        likelihood=c.likelihood,
        gaussian_sigma=c.gaussian_sigma,
        prior=c.prior.name,
        num_prior_components=int(c.prior.num_components),
        convt_implementation=backends.defaults().convt_implementation,
    )
    # Parse errors and shape mismatches surface here, at creation, not at the first train step.
    layers_lib.parse_spec(c.encoder, 'model.encoder')
    layers_lib.parse_spec(c.decoder, 'model.decoder', allow_out=True)
    return check_model(model, data_shape, model.use_labels, where='model')


def check_model(
    model: nn.Module | nnx.Module,
    data_shape: tuple[int, ...],
    use_labels: bool,
    *,
    where: str = 'model',
) -> nn.Module | nnx_models.NNXModel:
    """Checks the protocol and that the model initialises and scores a zero example.

    Returns:
      model, unchanged; an `nnx.Module` adapted (`nnx_models.NNXModel`: the functional form the
      library calls, split once here).

    Raises:
      ValueError: a protocol member is missing, a log-density is not [K], or the optional
        `sample_and_log_posterior` does not return (z shaped as `sample_posterior`'s, [K]).
    """
    if isinstance(model, nnx.Module):
        model = nnx_models.NNXModel(model, where=where)
    check_protocol(model, where)
    data_shape = tuple(int(d) for d in data_shape)
    x = jax.ShapeDtypeStruct(data_shape, jnp.float32)
    y = jax.ShapeDtypeStruct((), jnp.int32) if use_labels else None
    key = jax.random.key(0)  # Concrete: an NNX module built by path takes an int seed from it.
    variables = jax.eval_shape(lambda: init_variables(model, key, data_shape, use_labels))
    if isinstance(model, VAE):
        return model

    one_pass = has_one_pass_posterior(model)

    def scores(variables, x, y):
        noise = {n: jnp.zeros((2, *s), jnp.float32) for n, s in model.latent_shapes.items()}
        call = functools.partial(model.apply, variables, y=y, train=False)
        z = call(x, noise, method='sample_posterior')
        out = {
            'log_posterior': call(x, z, method='log_posterior'),
            'log_likelihood': call(x, z, method='log_likelihood'),
            'log_prior': call(z, method='log_prior'),
        }
        if not one_pass:
            return out, z, None
        pair = call(x, noise, method='sample_and_log_posterior')
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ValueError(
                f'{where}: {type(model).__name__}.sample_and_log_posterior must return a pair '
                f'(z, log q [K]), got {type(pair).__name__}.'
            )
        return {**out, 'sample_and_log_posterior': pair[1]}, z, pair[0]

    outs, z, z_one_pass = jax.eval_shape(scores, variables, x, y)
    for name, out in outs.items():
        if out.shape != (2,):
            raise ValueError(
                f'{where}: {type(model).__name__}.{name} returned shape {out.shape} for K = 2 '
                'samples of one example; it must return [K].'
            )
    if one_pass:
        want, got = (jax.tree.map(lambda a: a.shape, tree) for tree in (z, z_one_pass))
        if got != want:
            raise ValueError(
                f'{where}: {type(model).__name__}.sample_and_log_posterior must return (z, '
                f'log q) with z shaped as sample_posterior returns it, {want}; got z {got}.'
            )
    return model
