"""The objective registry: every objective a config can name (`config.objective`), with its options.

Each objective module declares its objectives in a module-level `OBJECTIVES` tuple of
`registry.Objective` (the function, whether it is per-example or batch-level, and its options);
each option (`registry.Option`: keyword argument, config key, default, allowed values, doc) is
declared once, beside the objective that introduced it, and shared by reference (e.g.
`log_weights.K_SAMPLES`). The step configuration (`steps.StepConfig.from_config`) reads the
chosen objective's options from here, and config validation (`config_validation`) checks each
option's value from its declaration and runs the objective's `check`.

Adding an objective:
1. its file: the function (per-example `fn(key, model, **options)` or batch-level, see
   `registry.Objective`) and its declaration in that module's `OBJECTIVES`, with any new
   `Option`s (a new module also goes into `_MODULES` below);
2. vae_jax/config.py: a top-level key with a comment for each new option (the defaults must
   equal the declared ones; tests/objectives_test.py checks it);
3. a test of the function.

An objective that trains a second network with its own optimizer (FactorVAE's discriminator)
declares it in `Objective.aux` (`registry.AuxNetwork`, with its module and optimizer options);
the train state then carries it as the parameter group `state.aux[name]` (vae_jax/aux_networks.py).
"""

from __future__ import annotations

from typing import Any

from vae_jax import disentangle_vaes, factor_vae, iw_objectives, log_weights, registry, tcvae

Objective = registry.Objective
Option = registry.Option
AuxNetwork = registry.AuxNetwork

_MODULES = (log_weights, iw_objectives, tcvae, disentangle_vaes, factor_vae)

OBJECTIVES: dict[str, Objective] = {
    objective.name: objective for module in _MODULES for objective in module.OBJECTIVES
}
NAMES: tuple[str, ...] = tuple(OBJECTIVES)


def _collect_options() -> tuple[Option, ...]:
    """Every option of the registry once, in declaration order.

    Raises:
        ValueError: two different declarations read the same config key.
    """
    by_key: dict[str, Option] = {}
    for objective in OBJECTIVES.values():
        for option in objective.all_options:
            if by_key.setdefault(option.key, option) is not option:
                raise ValueError(
                    f'config.{option.key} is declared twice (objective {objective.name!r}); '
                    'declare an option once and share it.'
                )
    return tuple(by_key.values())


OPTIONS: tuple[Option, ...] = _collect_options()


def get(name: str) -> Objective:
    """The objective called `name` (config key `objective`).

    Raises:
        ValueError: naming the allowed objectives.
    """
    if name not in OBJECTIVES:
        raise ValueError(f'objective={name!r} is not one of {NAMES}.')
    return OBJECTIVES[name]


def readers(option: Option) -> tuple[str, ...]:
    """The names of the objectives that read `option` (themselves or in an auxiliary network)."""
    return tuple(name for name, o in OBJECTIVES.items() if option in o.all_options)


def read_options(name: str, config: Any) -> tuple[tuple[str, Any], ...]:
    """The options of objective `name` from `config`: ((keyword, value), ...), hashable.

    Raises:
        ValueError: an unknown objective.
    """
    return tuple((o.name, o.read(config[o.key])) for o in get(name).options)


def read_aux_options(name: str, config: Any) -> tuple[tuple[str, tuple, tuple], ...]:
    """The auxiliary networks' options of objective `name` from `config`, hashable.

    Returns:
      ((network name, module options ((keyword, value), ...), optimizer options), ...), in
      declaration order; () for an objective without auxiliary networks.
    """

    def read(options):
        return tuple((o.name, o.read(config[o.key])) for o in options)

    return tuple((n.name, read(n.module_options), read(n.optimizer_options)) for n in get(name).aux)


def validate(config: Any) -> None:
    """Checks `config.objective` and every option from its declaration.

    Each registered option's value must be allowed (whichever objective is chosen: the key
    exists in every config); an `exclusive` option must keep its default under an objective that
    does not read it; then the chosen objective's `check` runs.

    Raises:
        ValueError: naming the key, its value and what is allowed.
    """
    if config.objective not in OBJECTIVES:
        allowed = ' | '.join(repr(n) for n in NAMES)
        raise ValueError(f'config.objective={config.objective!r} is invalid; allowed: {allowed}')
    chosen = OBJECTIVES[config.objective]
    for option in OPTIONS:
        value = config[option.key]
        option.validate(value)
        if option.exclusive and option not in chosen.all_options and value != option.default:
            names = readers(option)
            where = f'objective={names[0]!r}' if len(names) == 1 else f'objective in {names}'
            raise ValueError(
                f'config.{option.key}={value!r} applies only when {where} (here '
                f'objective={config.objective!r}); allowed here: {option.default!r}'
            )
    if chosen.check is not None:
        chosen.check(config)


def describe() -> str:
    """A Markdown table of the registry: objective, what it is, its options (for the docs)."""
    rows = ['| objective | what | options |', '| --- | --- | --- |']
    for name, objective in OBJECTIVES.items():
        options = ', '.join(f'`{o.key}`' for o in objective.all_options) or '-'
        doc = objective.doc.replace('|', '\\|')  # a literal bar inside a table cell
        rows.append(f'| `{name}` | {doc} | {options} |')
    return '\n'.join(rows)
