"""What a registered objective declares: its function and its options, each option once.

An `Option` is one keyword argument of an objective's function, read from one top-level config
key, with its default, its allowed values and a line of documentation. An `Objective` is a
function plus the options it reads, and the auxiliary networks it trains beside the model
(`AuxNetwork`: e.g. FactorVAE's discriminator, with its own optimizer and options). Objective
modules (`log_weights`, `iw_objectives`, `tcvae`, ...) declare theirs in a module-level
`OBJECTIVES` tuple; `vae_jax.objectives` is the registry that collects them, and the step
configuration (`steps.StepConfig`) and config validation (`config_validation`) read everything
from there. This module imports nothing of vae_jax, so an objective module can declare itself
without importing the registry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of an objective.

    Attributes:
        name: the keyword argument of the objective's function.
        key: the top-level config key it is read from.
        default: its default (the value in vae_jax/config.py).
        kind: int | float | bool | str: the hashable type the step configuration holds.
        ok: config value -> whether it is allowed.
        allowed: what is allowed, in the words of the error message.
        doc: one line: what the option does.
        exclusive: a value other than the default is a config error under an objective that
            does not read this option (it would be silently ignored).
    """

    name: str
    key: str
    default: Any
    kind: type
    ok: Callable[[Any], bool]
    allowed: str
    doc: str
    exclusive: bool = False

    def validate(self, value: Any) -> None:
        """Raises `ValueError` naming the key, the value and what is allowed."""
        try:
            good = self.ok(value)
        except TypeError:
            good = False
        if not good:
            raise ValueError(f'config.{self.key}={value!r} is invalid; allowed: {self.allowed}')

    def read(self, value: Any) -> Any:
        """The config value as the step configuration holds it (a hashable Python constant)."""
        return self.kind(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choice(
    name: str, key: str, default: str, choices: Iterable[str], doc: str, *, exclusive=False
) -> Option:
    """An option whose value is one of `choices` (strings)."""
    choices = tuple(choices)
    allowed = ' | '.join(repr(c) for c in choices)
    return Option(name, key, default, str, lambda v: v in choices, allowed, doc, exclusive)


def integer(name: str, key: str, default: int, low: int, doc: str, *, exclusive=False) -> Option:
    """An integer option >= `low` (a bool is not an integer here)."""
    ok = lambda v: _is_int(v) and v >= low
    return Option(name, key, default, int, ok, f'an integer >= {low}', doc, exclusive)


def number(
    name: str,
    key: str,
    default: float,
    ok: Callable[[float], bool],
    allowed: str,
    doc: str,
    *,
    exclusive=False,
) -> Option:
    """A finite real option (int or float, not bool) for which `ok` holds."""

    def finite_and_ok(v):
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and ok(v)

    return Option(name, key, default, float, finite_and_ok, allowed, doc, exclusive)


def boolean(name: str, key: str, default: bool, doc: str, *, exclusive=False) -> Option:
    """A True | False option."""
    ok = lambda v: isinstance(v, bool)
    return Option(name, key, default, bool, ok, 'True | False', doc, exclusive)


@dataclasses.dataclass(frozen=True)
class AuxNetwork:
    """A second network that an objective trains beside the model, with its own optimizer.

    The train state holds it as a named parameter group, `state.aux[name]`
    (`aux_networks.AuxState`: its parameters and its optimizer state), which the loop,
    checkpoints, resume and the vectorised sweep carry like the model's own. Each train step
    (`steps.train_step`) computes, from the same state: the model's loss, in which the objective
    sees the network with its current parameters (no gradient reaches them), and the network's
    own loss on what the objective hands it (`loss`, with the model's gradient stopped); then
    both optimizers step.

    Attributes:
        name: the group's name in `state.aux`, checkpoints and error messages.
        module: (latent_shapes, **module options) -> a Flax Linen module. `latent_shapes` is the
            model's ((name, shape), ...); raise `ValueError` for latents it cannot take.
        input_shape: latent_shapes -> one example's input shape, for initialising the module.
        optimizer: (**optimizer options) -> an optax `GradientTransformation`.
        loss: (key, apply, inputs) -> (loss [], metrics: dict of []), `apply` being the module
            applied with the group's parameters (differentiated) and `inputs` what the
            objective returned for this group. Its metrics are logged as `train/<metric>`.
        module_options, optimizer_options: the options each of the two reads, declared like an
            objective's (each config key once in the registry).
        doc: one line: what the network is.
    """

    name: str
    module: Callable[..., Any]
    input_shape: Callable[[Any], tuple[int, ...]]
    optimizer: Callable[..., Any]
    loss: Callable[..., Any]
    module_options: tuple[Option, ...] = ()
    optimizer_options: tuple[Option, ...] = ()
    doc: str = ''

    @property
    def options(self) -> tuple[Option, ...]:
        return self.module_options + self.optimizer_options


@dataclasses.dataclass(frozen=True)
class Objective:
    """An objective as the train step runs it.

    A per-example objective is `fn(key, model: log_weights.LatentModel, **kwargs) -> dict of []`
    for ONE example; the step vmaps it over the batch (so write it for one example). A
    batch-level objective (one that needs the other examples of the minibatch, e.g.
    beta-TCVAE's minibatch-weighted sampling) is
    `fn(keys [B], bind, images [B, *event], labels [B], **kwargs) -> dict of [B]` (one key per
    example), where `bind(x, y) -> LatentModel` binds one example (vmap it as needed, with
    `axis_name='batch'` for BatchNorm models); the step calls it once per batch. Either way the
    step averages the [B] terms, so the loop has one code path.

    Attributes:
        name: the config's `objective` value.
        fn: the objective.
        options: what `fn` reads from the config, as keyword arguments.
        per_example: which of the two signatures `fn` has.
        inputs: what the step passes besides the options: 'beta' (the KL weight at this step,
            traced), 'dataset_size' (the number of training examples, set by the trainer) and
            'step' (the optimizer step, traced: for schedules such as AnnealedVAE's capacity).
        check: optional config -> None raising `ValueError` for a combination of values that
            no single option's allowed values express (e.g. M must divide k_samples).
        doc: one line: what the objective is.
        capabilities: the optional model capabilities it needs, as `protocol.Capabilities`
            field names (e.g. 'distributions', the one-layer capability); a model without one
            is a `ValueError` when the step configuration is built.
        aux: the auxiliary networks it trains (`AuxNetwork`), each a parameter group of the
            train state; empty for most objectives, whose train state then has no group. An
            objective with one is batch-level, takes the input 'aux' ({name: apply} with the
            groups' current parameters, or None where there are none, e.g. in evaluation) and
            returns (terms, {name: inputs of that network's loss}).
    """

    name: str
    fn: Callable[..., dict[str, Any]]
    options: tuple[Option, ...] = ()
    per_example: bool = True
    inputs: tuple[str, ...] = ('beta',)
    check: Callable[[Any], None] | None = None
    doc: str = ''
    capabilities: tuple[str, ...] = ()
    aux: tuple[AuxNetwork, ...] = ()

    def __post_init__(self):
        if self.aux and (self.per_example or 'aux' not in self.inputs):
            raise ValueError(
                f'objective {self.name!r} trains auxiliary networks: it must be batch-level '
                "(per_example=False) and take the input 'aux'"
            )

    @property
    def all_options(self) -> tuple[Option, ...]:
        """Its own options, then those of its auxiliary networks (every key it reads)."""
        return self.options + tuple(o for network in self.aux for o in network.options)
