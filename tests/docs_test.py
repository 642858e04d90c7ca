"""The README and the documentation pages say only what is true of this repository.

- Every fenced `python` or `bash` block of README.md and docs/ runs, in order, in a temporary
  directory that sees the repository (its top-level folders are linked there and it is on
  PYTHONPATH), unless the line just before it is `<!-- skip: REASON -->`; then it is reported as
  skipped with that reason. Blocks of one page share the directory, so a later block may use a
  file an earlier one wrote. The runnable blocks take about 30 s of CPU in all.
- Every repository path they mention exists (paths under `runs/`, with `<...>`, `*`, `{...}`
  or `/path/to/` are placeholders), and none is a path of the authors' machine.
- Every `vae_jax.<module>[.<name>]`, `<module>.<name>` (a module of the package named without
  its prefix, e.g. `losses.elbo`) and `<module>:<Class>` they mention imports and resolves.
- The layout page names every module of the package.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from absl.testing import absltest, parameterized

import vae_jax

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', REPO / 'CONTRIBUTING.md', *sorted((REPO / 'docs').rglob('*.md'))]
PAGES = [page for page in PAGES if page.exists()]
RUNNABLE = {'python': 'python', 'py': 'python', 'bash': 'bash', 'sh': 'bash', 'shell': 'bash'}
FENCE = re.compile(r'^```(\S*)\s*$')
SKIP = re.compile(r'^<!-- skip: (?P<reason>\S.*?) -->$')
COMMENT = re.compile(r'<!--.*?-->', re.S)
TOP_LEVEL = ('vae_jax', 'configs', 'experiments', 'scripts', 'tests', 'benchmarks', 'examples')
# A repository path: a top-level folder then a path, or docs/..., or a known top-level file.
PATH = re.compile(
    r'(?<![\w./$-])((?:' + '|'.join(TOP_LEVEL) + r'|docs)/[\w./<>*{}:-]*'
    r'|(?:Makefile|pyproject\.toml|mkdocs\.yml|LICENSE|CHANGELOG\.md|CONTRIBUTING\.md'
    r'|\.gitignore|\.ci/run)(?!\w))'
)
DOTTED = re.compile(r'(?<![\w.])vae_jax\.([a-z_]+)(?:\.([A-Za-z_]\w*))?')
MODULES = sorted(p.stem for p in (REPO / 'vae_jax').glob('*.py') if not p.stem.startswith('_'))
# `losses.elbo`, `steps.make_model_binder`: a module of the package without its prefix. Not
# `config.*` and `run.*`, which are more often a config's keys or a file (`run.lock`).
BARE = re.compile(
    r'(?<![\w./])('
    + '|'.join(m for m in MODULES if m not in ('config', 'run'))
    + r')\.([A-Za-z_]\w*)'
)
FILE_SUFFIXES = {'py', 'json', 'jsonl', 'md', 'sh', 'png', 'lock', 'log', 'ipynb'}
IMPORT_PATH = re.compile(r'(?<![\w.])((?:vae_jax|examples)\.[a-z_]+):([A-Z]\w*)')
# Paths of one machine (the folder this checkout lives in, home directories), or folders outside
# the repository shown as if every reader had them.
_MACHINE_DIRS = (re.escape(f'{REPO.parent}/'), '/home/', '/root/', '/Users/', r'\.\./shared/')
MACHINE_PATH = re.compile(r'(?:^|[\s`(=])(' + '|'.join(_MACHINE_DIRS) + ')')


def blocks(page: Path) -> list[tuple[int, str, str, str | None]]:
    """The fenced blocks of a page: (line, language, code, skip reason or None)."""
    lines = page.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, language = i, match.group(1)
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith('```')), None)
        if end is None:
            raise ValueError(f'{page}:{start + 1}: a code block that is never closed')
        skip = SKIP.match(lines[start - 1]) if start > 0 else None
        code = '\n'.join(lines[start + 1 : end]) + '\n'
        out.append((start + 1, language, code, skip.group('reason') if skip else None))
        i = end + 1
    return out


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def run_environment(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(tmp), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    # `python` in a bash block is this test's interpreter.
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env['PATH']])
    env.setdefault('JAX_PLATFORMS', 'cpu')
    env['MPLBACKEND'] = 'Agg'
    return env


def link_repository(tmp: Path) -> None:
    for entry in REPO.iterdir():
        if entry.name not in ('.git', '.venv', 'runs', 'site'):
            (tmp / entry.name).symlink_to(entry)


class CodeBlocksTest(parameterized.TestCase):
    @parameterized.named_parameters((page_id(page), page) for page in PAGES)
    def test_code_blocks_run_or_say_why_not(self, page):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            link_repository(tmp)
            env = run_environment(tmp)
            for line, language, code, reason in blocks(page):
                if language not in RUNNABLE:
                    continue
                with self.subTest(block=f'{page_id(page)}:{line}'):
                    if reason is not None:
                        self.skipTest(reason)
                    command = [sys.executable, '-c', code]
                    if RUNNABLE[language] == 'bash':
                        command = ['bash', '-euo', 'pipefail', '-c', code]
                    result = subprocess.run(
                        command, cwd=tmp, env=env, capture_output=True, text=True, timeout=300
                    )
                    self.assertEqual(
                        result.returncode,
                        0,
                        f'{page_id(page)}:{line}: the {language} block failed:\n{code}\n'
                        f'stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}',
                    )

    def test_block_parser_reads_skip_reasons(self):
        page = Path(self.create_tempfile(content=SAMPLE_PAGE).full_path)
        self.assertEqual(
            [(language, reason) for _, language, _, reason in blocks(page)],
            [('python', None), ('bash', 'needs a GPU'), ('text', None)],
        )

    @parameterized.named_parameters((page_id(page), page) for page in PAGES)
    def test_html_comments_are_skip_markers(self, page):
        # A stray comment (an editor's note such as '<!-- END section from issue 8 -->') is
        # invisible on the rendered page and goes stale; a misspelt marker would run its block.
        for comment in COMMENT.findall(page.read_text()):
            self.assertRegex(comment, SKIP, f'{page_id(page)}: not a skip marker: {comment!r}')


SAMPLE_PAGE = """# A page
```python
print(1)
```
<!-- skip: needs a GPU -->
```bash
nvidia-smi
```
```text
not code
```
"""


def is_placeholder(path: str) -> bool:
    return any(mark in path for mark in ('<', '*', '{', '/path/to/')) or path.startswith('runs/')


class PathsTest(parameterized.TestCase):
    @parameterized.named_parameters((page_id(page), page) for page in PAGES)
    def test_mentioned_paths_exist(self, page):
        text = page.read_text()
        missing = []
        for path in PATH.findall(text):
            path = path.split(':')[0].rstrip('.,;)')  # configs/zoo.py:piwae -> configs/zoo.py
            if not is_placeholder(path) and not (REPO / path).exists():
                missing.append(path)
        self.assertEmpty(missing, f'{page_id(page)} mentions paths that do not exist')

    @parameterized.named_parameters((page_id(page), page) for page in PAGES)
    def test_no_path_of_one_machine(self, page):
        self.assertEmpty(MACHINE_PATH.findall(page.read_text()), page_id(page))

    def test_path_pattern(self):
        found = PATH.findall('`configs/default.py`, see [x](docs/guide/data.md) and Makefile.')
        self.assertEqual(found, ['configs/default.py', 'docs/guide/data.md', 'Makefile'])
        self.assertEmpty(PATH.findall('a.vae_jax/x $TFDS/configs/x'))

    @parameterized.named_parameters((page_id(page), page) for page in PAGES)
    def test_mentioned_python_names_resolve(self, page):
        text = page.read_text()
        for module, name in DOTTED.findall(text):
            if module in ('train', 'evaluate'):  # command lines, imported as `python -m`
                continue
            with self.subTest(name=f'vae_jax.{module}.{name}'.rstrip('.')):
                if not name and module in vae_jax.__all__:  # vae_jax.load
                    continue
                imported = importlib.import_module(f'vae_jax.{module}')
                if name:
                    self.assertTrue(hasattr(imported, name), f'vae_jax.{module} has no {name}')
        for module, name in BARE.findall(text):
            if name in FILE_SUFFIXES:
                continue
            with self.subTest(name=f'{module}.{name}'):
                imported = importlib.import_module(f'vae_jax.{module}')
                self.assertTrue(hasattr(imported, name), f'vae_jax.{module} has no {name}')
        for module, name in IMPORT_PATH.findall(text):
            with self.subTest(name=f'{module}:{name}'):
                self.assertTrue(hasattr(importlib.import_module(module), name))


class LayoutTest(absltest.TestCase):
    def test_layout_page_names_every_module(self):
        layout = (REPO / 'docs' / 'contributing' / 'layout.md').read_text()
        for module in sorted((REPO / 'vae_jax').glob('*.py')):
            self.assertIn(f'`{module.name}`', layout, f'{module.name} is not in the layout page')


if __name__ == '__main__':
    absltest.main()
