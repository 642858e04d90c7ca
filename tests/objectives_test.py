"""Tests for vae_jax.objectives: the registry, its options, what the step and validation read."""

import inspect
from unittest import mock

import ml_collections
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import config as schema
from vae_jax import config_validation, objectives, registry, steps


def _config(**values):
    config = test_config.get_config()
    for key, value in values.items():
        *parents, leaf = key.split('.')
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


class RegistryTest(parameterized.TestCase):
    def test_names_resolve_and_unknown_names_list_the_allowed_ones(self):
        self.assertEqual(
            objectives.NAMES,
            (
                'elbo',
                'iwae',
                'autoencoder',
                'miwae',
                'ciwae',
                'piwae',
                'beta_tcvae',
                'dip_vae_i',
                'dip_vae_ii',
                'annealed_vae',
                'factor_vae',
            ),
        )
        for name in objectives.NAMES:
            self.assertEqual(objectives.get(name).name, name)
        with self.assertRaisesRegex(ValueError, "objective='tcvae' is not one of .*'beta_tcvae'"):
            objectives.get('tcvae')

    def test_the_schema_has_every_option_with_its_declared_default(self):
        config = schema.get_config()
        for option in objectives.OPTIONS:
            self.assertIn(option.key, config)
            self.assertEqual(config[option.key], option.default, option.key)
            self.assertIsInstance(config[option.key], option.kind, option.key)
            option.validate(option.default)  # the default is an allowed value

    def test_an_option_is_declared_once(self):
        first = registry.integer('m', 'miwae_m', 1, 1, 'doc')
        second = registry.integer('m', 'miwae_m', 1, 1, 'doc')
        twice = {
            'a': registry.Objective('a', lambda: None, (first,)),
            'b': registry.Objective('b', lambda: None, (second,)),
        }
        with mock.patch.object(objectives, 'OBJECTIVES', twice):
            with self.assertRaisesRegex(ValueError, r'config\.miwae_m is declared twice'):
                objectives._collect_options()
        shared = {
            'a': registry.Objective('a', lambda: None, (first,)),
            'b': registry.Objective('b', lambda: None, (first,)),
        }
        with mock.patch.object(objectives, 'OBJECTIVES', shared):
            self.assertEqual(objectives._collect_options(), (first,))

    @parameterized.named_parameters((name, name) for name in objectives.NAMES)
    def test_the_function_takes_its_options_and_inputs(self, name):
        objective = objectives.get(name)
        keywords = {o.name: o.default for o in objective.options}
        keywords.update({i: 1 for i in objective.inputs})
        signature = inspect.signature(objective.fn)
        if objective.per_example:
            signature.bind('key', 'model', **keywords)
        else:
            signature.bind('keys', 'bind', 'images', 'labels', **keywords)
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        if not accepts_any:  # every keyword the function has beyond the positionals is declared
            declared = set(keywords)
            for parameter in signature.parameters.values():
                if parameter.kind is parameter.KEYWORD_ONLY:
                    self.assertTrue(
                        parameter.name in declared or parameter.name == 'estimator',
                        f'{name}: keyword {parameter.name!r} is not declared',
                    )

    def test_describe_lists_every_objective_and_its_keys(self):
        table = objectives.describe()
        for name, objective in objectives.OBJECTIVES.items():
            row = next(line for line in table.splitlines() if line.startswith(f'| `{name}` |'))
            for option in objective.options:
                self.assertIn(f'`{option.key}`', row)


class StepConfigTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('elbo', {}, {'k_samples': 1, 'analytic_kl': True, 'kl_samples': 1, 'free_bits': 0.0}),
        ('iwae', {'objective': 'iwae', 'k_samples': 3}, {'k_samples': 3, 'estimator': 'reparam'}),
        (
            'miwae',
            {'objective': 'miwae', 'k_samples': 4, 'miwae_m': 2},
            {'k_samples': 4, 'miwae_m': 2},
        ),
        (
            'beta_tcvae',
            {'objective': 'beta_tcvae', 'tcvae_alpha': 2},
            {'tcvae_alpha': 2.0, 'tcvae_gamma': 1.0, 'tcvae_estimator': 'mws'},
        ),
        ('autoencoder', {'objective': 'autoencoder'}, {}),
    )
    def test_holds_the_chosen_objectives_options(self, values, expected):
        config = _config(**values)
        static = steps.StepConfig.from_config(config, (8, 8, 1), dataset_size=100)
        self.assertEqual(dict(static.objective_options), expected)
        for name, value in expected.items():  # cast to the declared kind (an int 2 -> 2.0)
            self.assertIs(type(dict(static.objective_options)[name]), type(value))
        hash(static)  # hashable: a static argument of the jitted step
        objective, kwargs = static.objective_fn(beta=0.5)
        self.assertIs(objective, objectives.get(config.objective))
        inputs = {'beta': 0.5, 'dataset_size': 100, 'step': 0}
        self.assertEqual(kwargs, {**expected, **{i: inputs[i] for i in objective.inputs}})

    def test_changing_an_option_changes_the_static_step_config(self):
        base = steps.StepConfig.from_config(_config(objective='ciwae'), (8, 8, 1))
        other = steps.StepConfig.from_config(_config(objective='ciwae', ciwae_beta=0.25), (8, 8, 1))
        self.assertNotEqual(base, other)
        self.assertNotEqual(hash(base), hash(other))


class ValidationTest(parameterized.TestCase):
    @parameterized.named_parameters((o.key, o) for o in objectives.OPTIONS)
    def test_a_bad_value_names_the_key_the_value_and_what_is_allowed(self, option):
        # A wrong type (not only a wrong value): the locked command line cannot give one, but a
        # config.json or a hand-built ConfigDict can.
        config = ml_collections.ConfigDict(_config().to_dict(), type_safe=False)
        config[option.key] = 'nope'
        pattern = rf"config\.{option.key}='nope' is invalid; allowed: "
        with self.assertRaisesRegex(ValueError, pattern):
            config_validation.validate(config)

    @parameterized.named_parameters(
        ('bool_as_count', {'k_samples': True}, r'k_samples=True is invalid; allowed: an integer'),
        ('zero_m', {'miwae_m': 0}, r'miwae_m=0 is invalid; allowed: an integer >= 1'),
        ('ciwae_beta_above_one', {'ciwae_beta': 1.5}, r'ciwae_beta=1\.5 .*\[0, 1\]'),
        ('nan_alpha', {'tcvae_alpha': float('nan')}, r'tcvae_alpha=nan .*>= 0'),
        ('unknown_estimator', {'tcvae_estimator': 'x'}, r"tcvae_estimator='x'.*'mws' \| 'mss'"),
        (
            'estimator_needs_iwae',
            {'gradient_estimator': 'dreg'},
            r"gradient_estimator='dreg' applies only when objective='iwae' \(here "
            r"objective='elbo'\); allowed here: 'reparam'",
        ),
        (
            'free_bits_needs_elbo',
            {'objective': 'miwae', 'free_bits': 0.5},
            r"free_bits=0\.5 applies only when objective='elbo'.*allowed here: 0\.0",
        ),
        (
            'free_bits_needs_analytic_kl',
            {'free_bits': 0.5, 'analytic_kl': False},
            r'free_bits=0\.5 applies only when analytic_kl=True',
        ),
        (
            'miwae_m_divides_k',
            {'objective': 'miwae', 'k_samples': 4, 'miwae_m': 3},
            r'miwae_m=3 must divide config\.k_samples=4 .*a divisor of 4',
        ),
        (
            'piwae_m_divides_k',
            {'objective': 'piwae', 'k_samples': 6, 'piwae_m': 4},
            r'piwae_m=4 must divide config\.k_samples=6',
        ),
        (
            'tcvae_needs_a_batch',
            {'objective': 'beta_tcvae', 'input.batch_size': 1},
            r'input\.batch_size=1: beta_tcvae .*allowed: >= 2',
        ),
        ('unknown_objective', {'objective': 'vi'}, r"config\.objective='vi' is invalid.*'elbo'"),
    )
    def test_rejects(self, values, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            config_validation.validate(_config(**values))

    @parameterized.named_parameters(
        ('dreg_with_iwae', {'objective': 'iwae', 'gradient_estimator': 'dreg'}),
        ('free_bits_with_elbo', {'free_bits': 0.5}),
        ('miwae_groups', {'objective': 'miwae', 'k_samples': 4, 'miwae_m': 2}),
        # Not exclusive: a zoo option under another objective is left as it is.
        ('miwae_m_under_elbo', {'miwae_m': 3}),
        ('analytic_kl_under_iwae', {'objective': 'iwae', 'analytic_kl': False}),
    )
    def test_accepts(self, values):
        config_validation.validate(_config(**values))


class OptionTest(absltest.TestCase):
    def test_kinds_and_allowed_values(self):
        count = registry.integer('n', 'n', 1, 2, 'doc')
        self.assertEqual(count.allowed, 'an integer >= 2')
        count.validate(2)
        for bad in (1, True, 2.0, None):
            with self.assertRaisesRegex(ValueError, r'config\.n=.* is invalid'):
                count.validate(bad)
        weight = registry.number('w', 'w', 0.5, lambda v: 0 <= v <= 1, 'a number in [0, 1]', 'd')
        self.assertIs(type(weight.read(1)), float)
        for bad in (float('inf'), -0.1, False, '0.5'):
            with self.assertRaises(ValueError):
                weight.validate(bad)
        flag = registry.boolean('f', 'f', True, 'doc')
        with self.assertRaisesRegex(ValueError, r'allowed: True \| False'):
            flag.validate(1)
        pick = registry.choice('c', 'c', 'a', ('a', 'b'), 'doc')
        with self.assertRaisesRegex(ValueError, r"allowed: 'a' \| 'b'"):
            pick.validate('z')


if __name__ == '__main__':
    absltest.main()
