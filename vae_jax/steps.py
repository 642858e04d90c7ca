"""Pure training and evaluation steps, and the multi-step chunk that one jitted call runs.

Nothing here does I/O. The config is read once, in `StepConfig.from_config`; the jitted code sees
arrays and the hashable `StepConfig` only.

Randomness: step t's key is `fold_in(loop_key, t)`, split per example; the data
order of epoch e is `permutation(fold_in(data_key, e), N)`. A resumed run therefore draws the same
noise and the same batches as an uninterrupted one, and no key is checkpointed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.training import train_state

from vae_jax import aux_networks, input_transform, losses, models, objectives, protocol
from vae_jax.batches import chunk_indices, epoch_permutation  # noqa: F401 -- re-exported

Array = jax.Array


class TrainState(train_state.TrainState):
    """Flax `TrainState` plus BatchNorm running statistics (an empty dict without BatchNorm) and
    the objective's auxiliary networks, {name: `aux_networks.AuxState`} (an empty dict for an
    objective that trains none)."""

    batch_stats: Any = flax.struct.field(default_factory=dict)
    aux: Any = flax.struct.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything the jitted step needs from the config: hashable Python constants only."""

    objective: str
    beta_warmup_steps: int
    use_labels: bool
    dynamic_binarize: bool
    skip_nonfinite_updates: bool
    # The chosen objective's options, ((keyword, value), ...), read from the config as the
    # registry declares them (`objectives.read_options`).
    objective_options: tuple[tuple[str, Any], ...] = ()
    # Its auxiliary networks' options (`objectives.read_aux_options`); () for most objectives.
    aux_options: tuple[tuple[str, tuple, tuple], ...] = ()
    # The number of training examples (beta-TCVAE's aggregate-posterior weights), set by the
    # trainer from the loaded data.
    dataset_size: int = 0
    # The model's latents, ((name, shape), ...) (`LatentVariableModel.latent_shapes`).
    latent_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    # The model's optional capabilities (`protocol.capabilities`). `one_pass_posterior`: the
    # binder gives the objectives its one-pass (z, log q) (`losses.LatentModel.sample_and_log_q`).
    # `distributions`: the one-layer capability; the binder builds the model from its q, p(x|z)
    # and p(z) (`losses.one_layer_model`: analytic KL, free bits, the autoencoder).
    one_pass_posterior: bool = False
    distributions: bool = False
    standard_normal_prior: bool = False

    @classmethod
    def from_config(
        cls,
        config: ml_collections.ConfigDict,
        data_shape: tuple[int, ...],
        model: Any = None,
        dataset_size: int = 0,
    ):
        """The step configuration of `config`, for `model` (default: the config's built-in VAE).

        Raises:
          ValueError: `config.model.module` is set but the module was not passed.
        """
        m = config.model
        if model is None and m.module is not None:
            raise ValueError(
                f'config.model.module={m.module!r}: pass the built model '
                '(StepConfig.from_config(config, data_shape, model)).'
            )
        if model is None:
            model = models.create_model(m, data_shape, config.objective)
        latent_shapes = tuple(
            (name, tuple(int(d) for d in shape)) for name, shape in model.latent_shapes.items()
        )
        capabilities = protocol.capabilities(model)
        objective = objectives.get(config.objective)
        missing = [c for c in objective.capabilities if not getattr(capabilities, c)]
        if missing:
            allowed = [
                name
                for name, o in objectives.OBJECTIVES.items()
                if all(getattr(capabilities, c) for c in o.capabilities)
            ]
            raise ValueError(
                f'config.objective={config.objective!r} needs the model capability '
                f'{" and ".join(_CAPABILITY_DOCS.get(c, repr(c)) for c in missing)}, which '
                f'{type(model).__name__} lacks; allowed with this model: {", ".join(allowed)}'
            )
        for network in objective.aux:  # A ValueError for latents the network cannot read.
            network.input_shape(latent_shapes)
        return cls(
            objective=config.objective,
            objective_options=objectives.read_options(config.objective, config),
            aux_options=objectives.read_aux_options(config.objective, config),
            beta_warmup_steps=int(config.beta_warmup_steps),
            use_labels=bool(m.use_labels),
            dynamic_binarize=config.input.binarize == 'dynamic',
            skip_nonfinite_updates=bool(config.skip_nonfinite_updates),
            latent_shapes=latent_shapes,
            one_pass_posterior=capabilities.one_pass_posterior,
            distributions=capabilities.distributions,
            standard_normal_prior=capabilities.standard_normal_prior,
            dataset_size=int(dataset_size),
        )

    def objective_fn(
        self, beta: Array | float, step: Array | int = 0, aux: dict[str, Any] | None = None
    ) -> tuple[objectives.Objective, dict[str, Any]]:
        """The objective (`objectives.get`) and its keyword arguments: options and step inputs.

        Args:
          beta: the KL weight at this step (may be traced), for objectives that take it.
          step: the optimizer step (may be traced), for objectives that take it.
          aux: the auxiliary networks with their current parameters (`aux_networks.bind`), or
            None, for objectives that train some.

        Returns:
          (objective, {keyword: value}): the chosen objective's options plus the inputs it
          declares ('beta', 'dataset_size', 'step', 'aux').
        """
        objective = objectives.get(self.objective)
        inputs = {'beta': beta, 'dataset_size': self.dataset_size, 'step': step, 'aux': aux}
        return objective, {
            **{name: inputs[name] for name in objective.inputs},
            **dict(self.objective_options),
        }


# How a capability is named in an error message (`protocol.Capabilities` fields).
_CAPABILITY_DOCS = {
    'distributions': "'distributions' (the one-layer capability: posterior_distribution, "
    'likelihood_distribution and prior_distribution of one latent vector; the built-in VAE has '
    'it)',
}


def standard_normal_noise(key: Array, k: int, latent_shapes) -> dict[str, Array]:
    """One draw of N(0, I) noise for K samples of every latent: {name: [K, *shape]}.

    A single latent gets `normal(key, (K, *shape))`, the draw `q.sample(seed=key,
    sample_shape=K)` of a one-layer Gaussian makes, so both ways of binding agree.
    """
    names = [name for name, _ in latent_shapes]
    sizes = [math.prod(shape) for _, shape in latent_shapes]
    if len(names) == 1:
        return {names[0]: jax.random.normal(key, (k, *latent_shapes[0][1]), jnp.float32)}
    flat = jax.random.normal(key, (k, sum(sizes)), jnp.float32)
    pieces = jnp.split(flat, np.cumsum(sizes)[:-1], axis=1)
    return {
        name: piece.reshape((k, *shape))
        for name, piece, (_, shape) in zip(names, pieces, latent_shapes, strict=True)
    }


def make_model_binder(
    apply_fn: Callable[..., Any],
    params: Any,
    batch_stats: Any,
    static: StepConfig,
    *,
    train: bool,
    updates: dict[str, Any] | None = None,
) -> Callable[[Array, Array | None], losses.LatentModel]:
    """Returns `bind(x, y) -> losses.LatentModel`: one example of the model, parameters bound.

    The one way the step and the evaluation see a model (`models.LatentVariableModel`). A model
    with the one-layer capability (`static.distributions`, e.g. the built-in `models.VAE`) is
    bound through its distributions (`losses.one_layer_model`: one encoder pass, analytic KL,
    free bits, the autoencoder's point mass); its samples are those the four methods draw for
    the same key. Any other model is bound through the four methods: `sample` draws
    `standard_normal_noise` and calls `sample_posterior`; `log_q(z, True)` calls
    `log_posterior` with stop-gradient copies of ALL parameters (so every layer's variational
    parameters are stopped, z stays live); the likelihood and prior are live. With
    `static.one_pass_posterior` (the module has `sample_and_log_posterior`), `sample_and_log_q`
    draws the same noise and calls it with live parameters, which the objectives use for
    reparameterised samples (one encoder pass instead of two).

    Args:
      apply_fn: the Flax module's `apply`.
      params: the parameter pytree.
      batch_stats: BatchNorm running statistics (`{}` without BatchNorm).
      static: the step configuration.
      train: BatchNorm uses batch statistics (pooled over the vmapped axis named 'batch') and
        updates its running statistics when True; uses the running statistics when False.
      updates: with `train=True` and BatchNorm, the new running statistics are written into
        this dict.

    Returns:
      bind: (x [*event], y [] int label or None) -> LatentModel.
    """
    live = {'params': params}
    stopped = {'params': jax.lax.stop_gradient(params)}
    if batch_stats:
        live['batch_stats'] = stopped['batch_stats'] = batch_stats
    mutable = ['batch_stats'] if (train and batch_stats) else False

    def call(variables, method, *args, y):
        out = apply_fn(variables, *args, y=y, train=train, method=method, mutable=mutable)
        if mutable:
            out, new_vars = out
            if updates is not None:
                _merge_statistics(updates, batch_stats, new_vars['batch_stats'])
        return out

    def bind_distributions(x: Array, y: Array | None) -> losses.LatentModel:
        prior = None  # N(0, I): `one_layer_model`'s default, which enables free bits.
        if not static.standard_normal_prior:
            # Not mutable: a VampPrior's encoder pass over its pseudo-inputs is not data.
            prior = apply_fn(live, train=train, method='prior_distribution')
        return losses.one_layer_model(
            x,
            lambda x: call(live, 'posterior_distribution', x, y=y),
            lambda z: call(live, 'likelihood_distribution', z, y=y),
            prior,
        )

    def bind(x: Array, y: Array | None) -> losses.LatentModel:
        y = y if static.use_labels else None
        if static.distributions:
            return bind_distributions(x, y)

        def sample(key, k):
            noise = standard_normal_noise(key, k, static.latent_shapes)
            return call(live, 'sample_posterior', x, noise, y=y)

        def sample_and_log_q(key, k):
            noise = standard_normal_noise(key, k, static.latent_shapes)
            return call(live, 'sample_and_log_posterior', x, noise, y=y)

        return losses.LatentModel(
            x=x,
            sample=sample,
            log_q=lambda z, stop: call(stopped if stop else live, 'log_posterior', x, z, y=y),
            log_likelihood=lambda z: call(live, 'log_likelihood', x, z, y=y),
            log_prior=lambda z: call(live, 'log_prior', z, y=y),
            sample_and_log_q=sample_and_log_q if static.one_pass_posterior else None,
        )

    return bind


def _merge_statistics(updates: dict[str, Any], old: Any, new: dict[str, Any]) -> None:
    """Adds one method call's BatchNorm statistics to `updates`, in place.

    A call returns the whole 'batch_stats' collection, the statistics of the layers it did not
    run unchanged (the very input arrays), so a later call (the decoder's) must not overwrite
    what an earlier one (the encoder's) updated: each leaf keeps the newest value that changed.
    """
    for name, value in new.items():
        before = old.get(name)
        if before is None:
            updates[name] = value
            continue
        latest = updates.get(name, before)
        updates[name] = jax.tree.map(lambda o, cur, n: cur if n is o else n, before, latest, value)


def make_model_fn(apply_fn: Callable[..., Any], static: StepConfig) -> Callable[..., Any]:
    """Returns `model_fn(variables, x, y) -> losses.LatentModel` in evaluation mode.

    The variables are an argument, not a closure, so jitted evaluation code compiles once.
    """

    def model_fn(variables: dict[str, Any], x: Array, y: Array | None) -> losses.LatentModel:
        bind = make_model_binder(
            apply_fn, variables['params'], variables.get('batch_stats', {}), static, train=False
        )
        return bind(x, y)

    return model_fn


def binarize(key: Array, x: Array) -> Array:
    """Dynamic binarisation (Burda et al. 2016): x [...] in [0, 1] -> a Bernoulli(x) draw, float."""
    return jax.random.bernoulli(key, x).astype(x.dtype)


def batch_terms(
    params: Any,
    batch_stats: Any,
    key: Array,
    images: Array,
    labels: Array,
    beta: Array,
    *,
    apply_fn: Callable[..., Any],
    static: StepConfig,
    train: bool,
    step: Array | int = 0,
    aux: dict[str, Any] | None = None,
    aux_inputs: dict[str, Any] | None = None,
) -> tuple[dict[str, Array], Any]:
    """Per-example objective terms over a batch, and the updated BatchNorm statistics.

    Args:
      params, batch_stats: the model's variables.
      key: consumed once; split per example.
      images: [B, *event] in [0, 1] (binarised here when the config says 'dynamic').
      labels: [B] int32.
      beta: [] KL weight, may be traced.
      step: [] the optimizer step, may be traced (objectives with a 'step' input, e.g.
        AnnealedVAE's capacity schedule).
      aux: objectives with auxiliary networks: {name: inputs -> outputs} with their current
        parameters (`aux_networks.bind`); None where there are none (evaluation).
      aux_inputs: objectives with auxiliary networks: what they hand each network's loss,
        {name: inputs}, is written into this dict.

    Returns:
      (terms: dict of [B] arrays, new batch_stats (unchanged without BatchNorm or in eval)).
    """
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f'batch_terms: images are {images.dtype}; the model takes float images. Stored '
            'uint8/bool rows become model input through input_transform.to_model_input.'
        )
    example_keys = jax.random.split(key, images.shape[0])
    objective, options = static.objective_fn(beta, step, aux)

    def prepare(example_key, x):
        bin_key, loss_key = jax.random.split(example_key)
        if static.dynamic_binarize:
            x = binarize(bin_key, x)
        return loss_key, x

    if objective.per_example:

        def per_example(example_key, x, y):
            loss_key, x = prepare(example_key, x)
            updates: dict[str, Any] = {}
            bind = make_model_binder(
                apply_fn, params, batch_stats, static, train=train, updates=updates
            )
            return objective.fn(loss_key, bind(x, y), **options), updates

        terms, updates = jax.vmap(per_example, axis_name='batch')(example_keys, images, labels)
    else:
        # A batch-level objective sees the whole (binarised) batch and binds examples itself.
        loss_keys, images = jax.vmap(prepare)(example_keys, images)
        updates = {}
        bind = make_model_binder(
            apply_fn, params, batch_stats, static, train=train, updates=updates
        )
        terms = objective.fn(loss_keys, bind, images, labels, **options)
        if objective.aux:
            terms, handed = terms
            if aux_inputs is not None:
                aux_inputs.update(handed)
        updates = jax.tree.map(lambda a: a[None], updates)
    new_stats = batch_stats
    if updates:
        # Statistics are pooled over the vmapped 'batch' axis, so every row holds the same values.
        new_stats = {**batch_stats, **jax.tree.map(lambda a: a[0], updates)}
    return terms, new_stats


def beta_at(beta: Array | float, step: Array, warmup_steps: int) -> Array:
    """The KL weight at `step`: linear warm-up from 0 over `warmup_steps`, then constant."""
    return losses.make_beta_fn(beta, warmup_steps)(step)


def global_norm(tree: Any) -> Array:
    """The L2 norm of all leaves of `tree` together: [] float32.

    Equals `optax.global_norm`; written as one dot product per leaf because XLA:CPU lowers a
    large sum of squares through a slow reduce-window tree (the IWAE-paper model's step at
    batch 20 ran 5-10% faster this way in an A/B run on one machine).
    """
    return jnp.sqrt(sum(jnp.vdot(leaf, leaf) for leaf in jax.tree.leaves(tree)))


def train_step(
    state: TrainState,
    images: Array,
    labels: Array,
    loop_key: Array,
    beta: Array,
    *,
    static: StepConfig,
    with_grad_norm: bool | Array = True,
) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer step on a batch.

    Args:
      state: the train state (step, params, optimizer state, batch_stats, aux). Its auxiliary
        networks (`state.aux`) step from the same state as the model (`aux_networks.update`).
      images: [B, *event] float32 in [0, 1].
      labels: [B] int32.
      loop_key: the run's loop key; this step uses `fold_in(loop_key, state.step)`.
      beta: [] the target KL weight (warm-up is applied here).
      with_grad_norm: whether to compute the global norm of the gradients (a Python bool, or a
        traced [] bool: computed under `lax.cond`); always with `skip_nonfinite_updates`, which
        needs it. Computed on every step, the norm is a second reader of every gradient and
        made the IWAE-paper step at k = 1 1.13-1.16x slower, so `train_chunk` asks for it on
        the last step of each call only.

    Returns:
      (new state, metrics: dict of [] arrays, batch means of the objective's terms plus 'beta',
       'grad_norm' (0 where not computed) and 'skipped' (1.0 when a non-finite update was
       dropped)).
    """
    step_key = jax.random.fold_in(loop_key, state.step)
    beta_t = beta_at(beta, state.step, static.beta_warmup_steps)
    aux_networks.check_state(static, state.aux)  # At trace time: a clear error, no cost.
    if state.aux:  # Auxiliary networks: their own key; the model's draws are unchanged.
        aux_key = jax.random.fold_in(step_key, aux_networks.STEP_SALT)

    def loss_fn(params):
        handed: dict[str, Any] = {}
        terms, new_stats = batch_terms(
            params,
            state.batch_stats,
            step_key,
            images,
            labels,
            beta_t,
            apply_fn=state.apply_fn,
            static=static,
            train=True,
            step=state.step,
            aux=aux_networks.bind(static, state.aux) if state.aux else None,
            aux_inputs=handed,
        )
        means = jax.tree.map(jnp.mean, terms)
        return means['loss'], (means, new_stats, handed)

    grads, (metrics, new_stats, handed) = jax.grad(loss_fn, has_aux=True)(state.params)
    if static.skip_nonfinite_updates or with_grad_norm is True:
        grad_norm = global_norm(grads)
    elif with_grad_norm is False:
        grad_norm = jnp.zeros((), jnp.float32)
    else:
        grad_norm = jax.lax.cond(
            with_grad_norm, global_norm, lambda _: jnp.zeros((), jnp.float32), grads
        )
    new_state = state.apply_gradients(grads=grads, batch_stats=new_stats)
    if state.aux:
        # Each network's step from the same state; the model's codes reach it stopped.
        new_aux, aux_metrics = aux_networks.update(aux_key, static, state.aux, handed)
        new_state = new_state.replace(aux=new_aux)
        metrics = {**metrics, **aux_metrics}
    skipped = jnp.zeros((), jnp.float32)
    if static.skip_nonfinite_updates:
        ok = jnp.isfinite(metrics['loss']) & jnp.isfinite(grad_norm)
        for value in aux_metrics.values() if state.aux else ():  # An auxiliary network's too.
            ok = ok & jnp.isfinite(value)
        # Keep the old parameters and optimizer state, but advance the step so that the next
        # step draws fresh noise.
        new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
        new_state = new_state.replace(step=state.step + 1)
        skipped = 1.0 - ok.astype(jnp.float32)
        # A skipped step contributes zeros, so the logged means (trainer.window_row) average
        # over the applied updates only instead of turning NaN.
        metrics = jax.tree.map(lambda m: jnp.where(ok, m, 0.0), metrics)
        grad_norm = jnp.where(ok, grad_norm, 0.0)
        beta_t = jnp.where(ok, beta_t, 0.0)
    metrics = {**metrics, 'beta': beta_t, 'grad_norm': grad_norm, 'skipped': skipped}
    return new_state, metrics


def train_chunk(
    state: TrainState,
    perm: Array,
    perm_epoch: Array,
    train_images: Array,
    train_labels: Array,
    loop_key: Array,
    data_key: Array,
    beta: Array,
    *,
    num_steps: int,
    batch_size: int,
    loop: str,
    static: StepConfig,
    batch_sharding: Any = None,
    input_spec: input_transform.InputSpec | None = None,
) -> tuple[TrainState, Array, Array, dict[str, Array]]:
    """Runs `num_steps` optimizer steps over device-resident data in one call.

    The data order depends only on the step, not on how steps are grouped into calls: step t
    takes rows (t mod S) B .. + B of epoch t // S's permutation (S steps per epoch). The rows of
    all `num_steps` steps are gathered before the loop (`chunk_indices`), so the loop body holds
    no permutation, branch or slice; the last epoch's permutation is carried to the next call.

    Args:
      state: the train state (donated by the caller's jit).
      perm: [N] int32, the permutation of epoch `perm_epoch`.
      perm_epoch: [] int32.
      train_images: [N, ...] the whole training split as stored (uint8, bool or float32), on
        device; each step's gathered rows become model input by `input_spec`.
      train_labels: [N] int32.
      loop_key, data_key: the run's keys.
      beta: [] target KL weight.
      num_steps: static; steps in this call.
      batch_size: static.
      loop: 'scan' (one compiled loop body) or 'unroll' (num_steps copies; faster for conv
        gradients on XLA:CPU, see docs/how_it_works.md).
      static: the step configuration.
      batch_sharding: optional `jax.sharding.Sharding` for the gathered batch (data parallel).
      input_spec: static; turns the gathered rows into the model's input
        (`input_transform.to_model_input`: scaling, padding). None: the rows are float model
        input already.

    Returns:
      (state, perm, perm_epoch, metric sums over the steps: dict of [] arrays).
    """
    idx, perm, perm_epoch = chunk_indices(
        state.step, perm, perm_epoch, data_key, train_images.shape[0], num_steps, batch_size
    )
    state, sums = train_steps(
        state,
        idx,
        lambda rows: (train_images[rows], train_labels[rows]),
        loop_key,
        beta,
        num_steps=num_steps,
        loop=loop,
        static=static,
        batch_sharding=batch_sharding,
        input_spec=input_spec,
    )
    return state, perm, perm_epoch, sums


def train_steps(
    state: TrainState,
    xs: Any,
    batch_of: Callable[[Any], tuple[Array, Array]],
    loop_key: Array,
    beta: Array,
    *,
    num_steps: int,
    loop: str,
    static: StepConfig,
    batch_sharding: Any = None,
    input_spec: input_transform.InputSpec | None = None,
) -> tuple[TrainState, dict[str, Array]]:
    """`num_steps` optimizer steps; step j trains on `batch_of(xs[j])` (stored rows).

    The loop of both input pipelines: `train_chunk` passes each step's row indices and gathers
    them from the device-resident split; the streamed pipeline (vae_jax/streaming.py) passes the
    rows it read and `batch_of` returns them as they are. Everything after the batch is one code.

    Args:
      state: the train state.
      xs: a pytree whose leaves have a leading [num_steps] axis.
      batch_of: one step's slice of `xs` -> (images [B, *event], labels [B] int32).
      loop_key, beta, num_steps, loop, static, batch_sharding, input_spec: as in `train_chunk`.

    Returns:
      (state, metric sums over the steps: dict of [] arrays).
    """

    def body(state, x, with_grad_norm):
        images, labels = batch_of(x)
        if batch_sharding is not None:
            images = jax.lax.with_sharding_constraint(images, batch_sharding)
            labels = jax.lax.with_sharding_constraint(labels, batch_sharding)
        if input_spec is not None:
            images = input_transform.to_model_input(images, input_spec)
        return train_step(
            state, images, labels, loop_key, beta, static=static, with_grad_norm=with_grad_norm
        )

    # Without `skip_nonfinite_updates` the gradient norm is computed on the last step of the
    # call only (see `train_step`) and stands for all of the call's steps in the sums, so the
    # logged 'grad_norm' is a mean of one sample per call.
    if loop == 'scan':
        last = jnp.arange(num_steps) == num_steps - 1  # the traced with_grad_norm of each step
        state, metrics = jax.lax.scan(lambda s, x: body(s, *x), state, (xs, last))
        sums = jax.tree.map(lambda m: jnp.sum(m, axis=0), metrics)
    elif loop == 'unroll':
        sums = None
        for j in range(num_steps):
            state, metrics = body(state, jax.tree.map(lambda a, j=j: a[j], xs), j == num_steps - 1)
            sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
    else:
        raise ValueError(f"loop must be 'scan' or 'unroll', got {loop!r}")
    if not static.skip_nonfinite_updates:
        sums['grad_norm'] = sums['grad_norm'] * num_steps
    return state, sums
