"""The docs are tested: every fenced shell block (```bash, ```sh, ```shell, ```console) of README.md and
docs/*.md is tagged by the line right above its opening fence, and the blocks tagged `run` run.

The tags (TAGS below is the one list; README.md's "docs/" section says the same to writers):

    <!-- docs: run -->       executed by this test, in file order, on a fresh instance (below); keep it cheap
    <!-- docs: gpu -->       needs a CUDA GPU; not run
    <!-- docs: weights -->   needs real model weights or data sets that are not in the repo; not run
    <!-- docs: services -->  needs PostgreSQL / Redis / Celery, or starts a server that keeps running; not run
    <!-- docs: make -->      runs `make demo` / `make test`, or a command that `make demo` itself runs: CI
                             (.ci/run) runs exactly those two, and running them here would run the test
                             suite from inside the test suite (or the demo a second time)

A `run` block runs with `bash -euo pipefail`, cwd the repo root, the venv's bin first on PATH,
HF_HUB_OFFLINE=1, and per docs file a fresh instance: a temporary DAGSTER_HOME holding the repo's
dagster.yaml, created by `python -m synground_assets.ops.cli instance` as `make setup` does, and a temporary
SYNGROUND_HOME (data root, lineage index, MLflow store). A long block takes its size from an
environment variable it documents with a default, e.g. `--partition-range "${SHARDS:-shapes|00000...shapes|00031}"`;
this test sets SMALL (below) to keep the whole docs test short. In a ```console block only the lines
that start with `$ ` run (with their `\\` continuation lines); the others are output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
TAGS = {
    "run": "executed by the docs test on a fresh instance",
    "gpu": "needs a CUDA GPU",
    "weights": "needs real model weights or data sets",
    "services": "needs PostgreSQL/Redis/Celery or starts a server",
    "make": "runs make demo / make test, or a command make demo runs; CI runs both itself",
}
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
# What the `run` blocks' documented size variables are set to here.
SMALL = {"SHARDS": "shapes|00000...shapes|00000", "STEPS": "2", "TRAIN_IMAGES": "32", "EVAL_IMAGES": "16"}
# Variables that would point a block at state outside its fresh instance.
UNSET = ("SYNGROUND_DATA", "SYNGROUND_LINEAGE", "MLFLOW_TRACKING_URI", "SYNGROUND_RECIPES", "SYNGROUND_PROFILE")
BLOCK_TIMEOUT_S = 600

_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_TAG = re.compile(r"^\s*<!--\s*docs:\s*(?P<tag>[\w-]+)\s*-->\s*$")
_TAG_LIKE = re.compile(r"^\s*<!--\s*docs\b.*-->\s*$")  # a line meant as a tag, well-formed or not


@dataclass(frozen=True)
class Block:
    path: str  # as shown in messages: relative to the repo root
    line: int  # 1-based line of the opening fence
    language: str
    tag: str | None  # the tag of the line right above, None when that line is no tag
    body: str

    def commands(self) -> str:
        """The text bash runs: the body, or for ```console the `$ ` lines and their continuations."""
        if self.language != "console":
            return self.body
        lines, continuing = [], False
        for line in self.body.splitlines():
            if continuing or line.startswith("$ "):
                lines.append(line if continuing else line[2:])
                continuing = line.rstrip().endswith("\\")
        return "\n".join(lines)


def parse_blocks(text: str, path: str) -> tuple[list[Block], list[str]]:
    """The fenced shell blocks of a Markdown text, and the problems of its tags (as 'path:line: ...')."""
    lines = text.splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    tag_lines_used: set[int] = set()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence = opening["fence"]
        language = (opening["info"].split() or [""])[0].lower()
        end = index + 1
        while end < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[end]):
            end += 1  # an unclosed fence runs to the end of the text, as CommonMark says
        if language in SHELL_LANGUAGES:
            above = _TAG.match(lines[index - 1]) if index > 0 else None
            tag = above["tag"] if above else None
            blocks.append(Block(path, index + 1, language, tag, "\n".join(lines[index + 1:end])))
            if above:
                tag_lines_used.add(index - 1)
        index = end + 1
    for number, line in enumerate(lines):
        tagged = _TAG.match(line)
        if _TAG_LIKE.match(line) and not tagged:
            problems.append(f"{path}:{number + 1}: malformed docs tag {line.strip()!r}: write `<!-- docs: TAG -->`"
                            f" with TAG one of {', '.join(TAGS)}")
        elif tagged and tagged["tag"] not in TAGS:
            problems.append(f"{path}:{number + 1}: unknown docs tag {tagged['tag']!r}: use one of {', '.join(TAGS)}"
                            " (synground_assets_tests/test_docs.py: TAGS)")
        elif tagged and number not in tag_lines_used:
            problems.append(f"{path}:{number + 1}: the tag {line.strip()!r} is not right above a ```bash/sh/shell/"
                            "console fence: put it on the line just before the fence (no blank line between)")
    for block in blocks:
        if block.tag is None:
            problems.append(f"{block.path}:{block.line}: the ```{block.language} block has no tag: put"
                            " `<!-- docs: TAG -->` on the line right above its fence (TAG: run, gpu, weights, ...)")
    return blocks, problems


def docs_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def all_blocks() -> tuple[list[Block], list[str]]:
    blocks, problems = [], []
    for file in docs_files():
        found, wrong = parse_blocks(file.read_text(encoding="utf-8"), str(file.relative_to(REPO)))
        blocks += found
        problems += wrong
    return blocks, problems


# --- the parser itself, on small texts ------------------------------------------------------------

SAMPLE = """# A page

<!-- docs: run -->
```bash
echo ran
```

```sh
echo untagged
```

<!-- docs: gpu -->

```console
$ nvidia-smi
```

<!-- docs: wheels -->
```shell
pip wheel .
```

````markdown
```bash
echo inside a four-backtick example: not a block of this page
```
````

```sql
SELECT 1;  -- not a shell block: no tag needed
```

<!-- docs:run-->
```bash
echo tag without spaces
```
"""


def test_parser_finds_each_shell_block_with_its_tag_and_line():
    blocks, _ = parse_blocks(SAMPLE, "page.md")
    assert [(block.line, block.language, block.tag) for block in blocks] == [
        (4, "bash", "run"), (8, "sh", None), (14, "console", None), (19, "shell", "wheels"), (34, "bash", "run")]
    assert blocks[0].body == "echo ran"


def test_parser_names_file_line_and_fix_of_every_problem():
    _, problems = parse_blocks(SAMPLE, "page.md")
    assert len(problems) == 4, problems
    assert any(p.startswith("page.md:8: the ```sh block has no tag") and "<!-- docs: TAG -->" in p for p in problems)
    assert any(p.startswith("page.md:12: the tag") and "no blank line" in p for p in problems)  # blank line below
    assert any(p.startswith("page.md:14: the ```console block has no tag") for p in problems)
    assert any(p.startswith("page.md:18: unknown docs tag 'wheels'") for p in problems)


def test_parser_reports_a_malformed_tag():
    _, problems = parse_blocks("<!-- docs run -->\n```bash\nls\n```\n", "x.md")
    assert problems[0].startswith("x.md:1: malformed docs tag"), problems
    assert problems[1].startswith("x.md:2: the ```bash block has no tag"), problems


def test_console_blocks_run_only_their_prompt_lines():
    block = Block("x.md", 1, "console", "run", "$ echo a \\\n    b\na b\n$ true\n")
    assert block.commands() == "echo a \\\n    b\ntrue"


# --- the repository's docs -------------------------------------------------------------------------

def test_every_shell_block_of_the_docs_is_tagged():
    blocks, problems = all_blocks()
    assert blocks, "no shell block found in README.md and docs/*.md: is the parser broken?"
    legend = "\n".join(f"  <!-- docs: {tag} -->  {meaning}" for tag, meaning in TAGS.items())
    assert not problems, "docs shell blocks without a valid tag:\n" + "\n".join(problems) + "\nThe tags:\n" + legend


def test_the_readme_maps_every_docs_file():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    files = [f"docs/{file.name}" for file in sorted((REPO / "docs").glob("*.md"))]
    missing = [file for file in files if file not in readme]
    assert not missing, f"README.md: add {', '.join(missing)} to the map of docs/ (section 'docs/')"


def _run_files() -> list[str]:
    blocks, _ = all_blocks()
    return sorted({block.path for block in blocks if block.tag == "run"})


def fresh_instance_env(home: Path) -> dict[str, str]:
    """The environment of a new user's shell after `make setup`, on an instance and data root of its own."""
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {name: value for name, value in os.environ.items() if name not in UNSET}
    env.update(DAGSTER_HOME=str(dagster_home), SYNGROUND_HOME=str(home), HF_HUB_OFFLINE="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])), **SMALL)
    created = subprocess.run([sys.executable, "-m", "synground_assets.ops.cli", "instance"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, f"creating the fresh instance failed:\n{created.stdout}\n{created.stderr}"
    return env


def block_failure(block: Block, env: dict[str, str]) -> str | None:
    """Run one block as the docs test does; None when it exits 0, else what to tell the writer."""
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.commands()], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return (f"{block.path}:{block.line}: the `run` block took over {BLOCK_TIMEOUT_S} s: make it cheaper (a"
                f" documented size variable such as SHARDS, set small by SMALL in {Path(__file__).name})")
    if done.returncode == 0:
        return None
    return (f"{block.path}:{block.line}: the `run` block exited {done.returncode} on a fresh instance.\n"
            f"--- block ---\n{block.commands()}\n--- last output ---\n{(done.stdout + done.stderr)[-4000:]}\n"
            "Fix: correct the command (or the code it documents); if it cannot run on a fresh CPU instance, tag it "
            "`<!-- docs: gpu -->`, `<!-- docs: weights -->` or `<!-- docs: services -->` instead.")


def test_a_failing_run_block_fails_naming_file_line_and_fix():
    assert block_failure(Block("x.md", 3, "bash", "run", "echo fine"), dict(os.environ)) is None
    # the first command's failure counts even when the last one succeeds (bash -e), as does a pipe's
    for body in ("echo started; false\necho after", "false | cat"):
        message = block_failure(Block("x.md", 7, "bash", "run", body), dict(os.environ))
        assert message and message.startswith("x.md:7: the `run` block exited 1") and "Fix:" in message, message


@pytest.mark.parametrize("path", _run_files())
def test_the_run_blocks_of_a_docs_file_run_on_a_fresh_instance(path, tmp_path):
    env = fresh_instance_env(tmp_path / "home")
    blocks, _ = parse_blocks((REPO / path).read_text(encoding="utf-8"), path)
    for block in (block for block in blocks if block.tag == "run"):
        failure = block_failure(block, env)
        assert failure is None, failure
