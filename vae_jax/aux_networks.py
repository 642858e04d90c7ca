"""Auxiliary networks in the train state: named parameter groups with their own optimizers.

Some objectives train a second network beside the model (FactorVAE's discriminator). The
objective declares it in the registry (`registry.AuxNetwork`: module, optimizer, loss and their
options); the train state holds one `AuxState` per declared network, `state.aux[name]`, and an
objective without one has `state.aux == {}` (no leaves: its step program, its checkpoints and
their checksums are those of a train state without the field).

Being part of the train state pytree, a group is donated, scanned, vmapped over a sweep's model
axis, checkpointed, checksummed and restored with everything else; what is here is only what is
specific to it: its initial value (`init`), the network with its current parameters for the
objective (`bind`) and its optimizer step (`update`). The step configuration holds the options
as hashable constants (`steps.StepConfig.aux_options`); the module and the optimizer are rebuilt
from them while tracing, so the state holds arrays only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from vae_jax import objectives, registry

# fold_in salt of an auxiliary network's initial parameters (from the run's init key) and of its
# step key (from the step's key): its own randomness, the model's draws unchanged.
INIT_SALT = 0x415558
STEP_SALT = 0x415559


@flax.struct.dataclass
class AuxState:
    """One auxiliary network's trained state: its parameters and its optimizer's state."""

    params: Any
    opt_state: Any


def networks(static: Any) -> list[tuple[registry.AuxNetwork, dict, dict]]:
    """The objective's auxiliary networks with their options: [(network, module kw, optim kw)].

    Args:
      static: the step configuration (`steps.StepConfig`: `objective`, `aux_options`).
    """
    declared = {n.name: n for n in objectives.get(static.objective).aux}
    return [
        (declared[name], dict(module_options), dict(optimizer_options))
        for name, module_options, optimizer_options in static.aux_options
    ]


def _module(network: registry.AuxNetwork, module_options: dict, static: Any):
    return network.module(static.latent_shapes, **module_options)


def init(key: jax.Array, static: Any) -> dict[str, AuxState]:
    """The initial groups: parameters from fold_in(key, INIT_SALT + i), fresh optimizer states.

    Args:
      key: the run's init key (not consumed: folded).
      static: the step configuration.

    Returns:
      {name: AuxState}; {} for an objective without auxiliary networks.
    """
    groups = {}
    for i, (network, module_options, optimizer_options) in enumerate(networks(static)):
        shape = network.input_shape(static.latent_shapes)
        dummy = jnp.zeros((1, *shape), jnp.float32)
        params = _module(network, module_options, static).init(
            jax.random.fold_in(key, INIT_SALT + i), dummy
        )['params']
        tx = network.optimizer(**optimizer_options)
        groups[network.name] = AuxState(params=params, opt_state=tx.init(params))
    return groups


def check_state(static: Any, aux: dict[str, Any]) -> None:
    """Raises `ValueError` unless `aux` holds exactly the objective's auxiliary networks.

    A train state built without them (e.g. `TrainState.create` by hand, not
    `build.create_train_state`) would otherwise train the model without its second network.
    """
    wanted = [name for name, _, _ in static.aux_options]
    if sorted(wanted) != sorted(aux):
        raise ValueError(
            f'objective={static.objective!r} trains the auxiliary networks {wanted}, but the '
            f'train state holds {sorted(aux)} in state.aux; build it with '
            'build.create_train_state (or add aux=aux_networks.init(key, static))'
        )


def bind(static: Any, aux: dict[str, AuxState]) -> dict[str, Callable[[Any], Any]] | None:
    """{name: inputs -> outputs}: each network with its current parameters, for the objective.

    None when the objective trains none (it then takes no 'aux' input).
    """
    bound = {}
    for network, module_options, _ in networks(static):
        module = _module(network, module_options, static)
        params = aux[network.name].params
        bound[network.name] = lambda inputs, m=module, p=params: m.apply({'params': p}, inputs)
    return bound or None


def update(
    key: jax.Array, static: Any, aux: dict[str, AuxState], inputs: dict[str, Any]
) -> tuple[dict[str, AuxState], dict[str, jax.Array]]:
    """One optimizer step of every auxiliary network on what the objective handed it.

    Args:
      key: the step's key for the groups (network i uses fold_in(key, i)).
      static: the step configuration.
      aux: {name: AuxState} before the step.
      inputs: {name: the network's loss inputs}, as the objective returned them (stopped).

    Returns:
      (new {name: AuxState}, the networks' metrics: dict of []).
    """
    new, metrics = dict(aux), {}
    for i, (network, module_options, optimizer_options) in enumerate(networks(static)):
        module = _module(network, module_options, static)
        group = aux[network.name]

        group_key = jax.random.fold_in(key, i)

        def loss_fn(params, module=module, network=network, group_key=group_key):
            apply = lambda x: module.apply({'params': params}, x)
            return network.loss(group_key, apply, inputs[network.name])

        grads, group_metrics = jax.grad(loss_fn, has_aux=True)(group.params)
        tx = network.optimizer(**optimizer_options)
        updates, opt_state = tx.update(grads, group.opt_state, group.params)
        new[network.name] = AuxState(optax.apply_updates(group.params, updates), opt_state)
        metrics.update(group_metrics)
    return new, metrics
