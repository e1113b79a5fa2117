"""The documentation's commands run as written, in the order written, on a fresh clone.

:func:`test_every_documented_command_runs_on_a_fresh_clone` copies the working tree as a clone would have it
(``git ls-files``: tracked files and untracked ones git does not ignore) into a temporary folder, links this
environment's ``.venv`` into it and the test data beside it (``../shared/data``, as in the project's layout),
and runs every shell block of a page in order, each in a new ``bash`` from the clone's root, stopping at the
first command that fails and naming it. One test per page, so that pytest-xdist spreads the pages over its
workers: each page on its own fresh clone, except the pages that use the README's outputs (they say
``<!-- docs-test: after README.md -->`` at their top), which run after the README on its clone, in
alphabetical order. ``results.md`` (a record of measurements) and ``model_card.md`` (a template) are not
instructions. The convention a page's author follows (``docs/contributing.md``): an HTML comment right before
a block shortens or skips it::

    <!-- docs-test: append --max_epochs 1 --image_size 32 -->     appended to every command of the block
    <!-- docs-test: replace OLD -> NEW -->                          a text replacement in the block
    <!-- docs-test: exit 2 -->                                      the block must end with this exit status
    <!-- docs-test: skip (reason) -->                               not run; the reason is required

The other tests check the convention itself and the README's shape, and are fast.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO_ROOT, data_root

SHELL_LANGUAGES = {"bash", "sh", "shell"}
NOT_INSTRUCTIONS = {"results.md", "model_card.md"}  # a record of measurements; the exported bundle's card
DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>\w[\w-]*)\s*(?P<argument>.*?)\s*-->\s*$")
PAGE_DIRECTIVE = "after"  # `<!-- docs-test: after README.md -->` anywhere before the first block: the page's prerequisite
FENCE = re.compile(r"^```(?P<language>[\w+-]*)\s*$")
BLOCK_TIMEOUT_S = 900


@dataclass
class Block:
    """One fenced shell block of a page and the docs-test directives written right before it."""

    page: str
    line: int  # of the opening fence, 1-based
    text: str
    append: list[str] = field(default_factory=list)
    replace: list[tuple[str, str]] = field(default_factory=list)
    exit_status: int = 0
    skip: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def script(self) -> str:
        """The block as it runs: replacements made, then ``append`` added to the end of every command."""
        text = self.text
        for old, new in self.replace:
            assert old in text, f"{self.where}: docs-test replace: {old!r} is not in the block"
            text = text.replace(old, new)
        if not self.append:
            return text
        lines = []
        for command in logical_lines(text):
            if command.strip() and not command.lstrip().startswith("#"):
                body, comment = split_comment(command)
                command = f"{body.rstrip()} {' '.join(self.append)}" + (f"  {comment}" if comment else "")
            lines.append(command)
        return "\n".join(lines) + "\n"


def logical_lines(text: str) -> list[str]:
    """Lines with their backslash continuations joined (as the shell reads them)."""
    return text.replace("\\\n", " ").splitlines()


def split_comment(command: str) -> tuple[str, str]:
    """``command`` split before a trailing ``# comment`` that is outside quotes."""
    quote = None
    for i, char in enumerate(command):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and i > 0 and command[i - 1].isspace():
            return command[:i], command[i:]
    return command, ""


def parse_page(path: Path, page: str) -> list[Block]:
    """Every fenced shell block of ``path`` with its directives; errors for a directive that means nothing."""
    blocks: list[Block] = []
    pending: list[tuple[int, str, str]] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = DIRECTIVE.match(line.strip())
        fence = FENCE.match(line)
        if directive and directive["kind"] == PAGE_DIRECTIVE:
            assert not blocks and not pending, f"{page}:{i + 1}: `docs-test: after` belongs before the first block"
        elif directive:
            pending.append((i + 1, directive["kind"], directive["argument"]))
        elif fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            assert end is not None, f"{page}:{i + 1}: a code block that is never closed"
            if fence["language"] in SHELL_LANGUAGES:
                block = Block(page, i + 1, "\n".join(lines[i + 1:end]) + "\n")
                for where, kind, argument in pending:
                    apply_directive(block, kind, argument, f"{page}:{where}")
                blocks.append(block)
            else:
                assert not pending, f"{page}:{pending[0][0]}: docs-test directive before a non-shell block"
            pending = []
            i = end
        elif line.strip() and pending:
            raise AssertionError(f"{page}:{pending[0][0]}: a docs-test directive must come right before a ```bash block")
        i += 1
    assert not pending, f"{page}:{pending[0][0]}: a docs-test directive after the last block"
    return blocks


def apply_directive(block: Block, kind: str, argument: str, where: str) -> None:
    if kind == "append":
        assert argument, f"{where}: docs-test append needs the arguments to append"
        block.append.append(argument)
    elif kind == "replace":
        old, arrow, new = argument.partition(" -> ")
        assert arrow and old, f"{where}: docs-test replace needs `OLD -> NEW`"
        block.replace.append((old, new))
    elif kind == "exit":
        assert argument.isdigit(), f"{where}: docs-test exit needs a number"
        block.exit_status = int(argument)
    elif kind == "skip":
        reason = argument.strip("() ")
        assert reason, f"{where}: docs-test skip needs a reason, e.g. `skip (needs Docker)`"
        block.skip = reason
    else:
        raise AssertionError(f"{where}: unknown docs-test directive {kind!r} (append, replace, exit, skip, after)")


def documentation_pages(root: Path = REPO_ROOT) -> list[str]:
    """README.md, then docs/*.md alphabetically (without the record and the template): the order they run in."""
    docs = sorted(p.name for p in (root / "docs").glob("*.md") if p.name not in NOT_INSTRUCTIONS)
    return ["README.md", *(f"docs/{name}" for name in docs)]


def all_blocks(root: Path = REPO_ROOT) -> list[Block]:
    return [block for page in documentation_pages(root) for block in parse_page(root / page, page)]


def prerequisite(root: Path, page: str) -> str | None:
    """The page a page runs after (``<!-- docs-test: after README.md -->``), or None: a fresh clone of its own."""
    for line in (root / page).read_text().splitlines():
        directive = DIRECTIVE.match(line.strip())
        if directive and directive["kind"] == PAGE_DIRECTIVE:
            return directive["argument"]
    return None


def page_groups(root: Path = REPO_ROOT) -> dict[str, list[str]]:
    """Pages by the clone they run on: a page without a prerequisite heads its own group, and the pages that
    run after it follow it in alphabetical order. A prerequisite must itself have none (one level)."""
    pages = documentation_pages(root)
    groups: dict[str, list[str]] = {page: [page] for page in pages if prerequisite(root, page) is None}
    for page in pages:
        after = prerequisite(root, page)
        if after is not None:
            assert after in groups, f"{page}: `docs-test: after {after}`: not a page that runs on its own clone"
            groups[after].append(page)
    return groups


# ----------------------------------------------------------------------------------------------
# The convention and the README's shape (fast)


def test_pages_run_after_the_readme_or_alone():
    groups = page_groups()
    assert list(groups)[0] == "README.md" and "docs/deploy.md" in groups["README.md"]
    assert sorted(p for group in groups.values() for p in group) == sorted(documentation_pages())


def test_every_shell_block_parses_and_every_skip_has_a_reason():
    blocks = all_blocks()
    assert len(blocks) > 20
    assert all(b.skip is None or b.skip for b in blocks)
    assert sum(b.skip is None for b in blocks) > len(blocks) / 2, "most documented commands must run"


def test_commands_use_the_venv_and_no_placeholders():
    """``python``, ``torchrun``, ``mlflow`` ... without ``.venv/bin/`` fail on a fresh clone (no activated venv)."""
    bare = re.compile(r"(^|[;&|(]\s*|\$\()\s*(python3?|pip|torchrun|mlflow|monailabel|monai-deploy|tensorboard)\b")
    for block in all_blocks():
        for command in logical_lines(block.text):
            assert not bare.search(command), f"{block.where}: `{command.strip()}` needs .venv/bin/"
            assert "path/to/" not in command, f"{block.where}: `{command.strip()}` names a placeholder path"


def test_yes_no_options_are_written_as_python_literals():
    """``monai.bundle run`` reads its options with fire: ``--resume false`` passes the text "false", which is true."""
    lowercase = re.compile(r"--(?!set\b)[\w#]+[ =](false|true)\b")
    for page in documentation_pages():
        for number, line in enumerate((REPO_ROOT / page).read_text().splitlines(), 1):
            assert not lowercase.search(line), f"{page}:{number}: write True / False: {line.strip()}"


def test_readme_is_short_and_links_every_docs_page():
    readme = (REPO_ROOT / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) < 250
    assert [n for n, line in enumerate(lines, 1) if len(line) > 110] == []
    for page in documentation_pages()[1:]:
        assert f"({page})" in readme, f"the README does not link {page}"


def test_directives_shorten_as_documented(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- docs-test: append --max_epochs 1 -->\n"
                    "<!-- docs-test: replace big -> small -->\n```bash\n"
                    "# a comment\n.venv/bin/python -m x \\\n    --data big  # trailing\n.venv/bin/python -c 'a # b'\n"
                    "```\n\n<!-- docs-test: skip (needs Docker) -->\n```sh\ndocker run x\n```\n\n"
                    "```\nnot a shell block\n```\n")
    first, second = parse_page(page, "page.md")
    assert first.line == 5 and second.skip == "needs Docker"
    assert first.script() == ("# a comment\n.venv/bin/python -m x      --data small --max_epochs 1  # trailing\n"
                              ".venv/bin/python -c 'a # b' --max_epochs 1\n")
    page.write_text("<!-- docs-test: skip -->\n```bash\nls\n```\n")
    with pytest.raises(AssertionError, match="needs a reason"):
        parse_page(page, "page.md")
    page.write_text("<!-- docs-test: appendix x -->\n```bash\nls\n```\n")
    with pytest.raises(AssertionError, match="unknown docs-test directive"):
        parse_page(page, "page.md")


# ----------------------------------------------------------------------------------------------
# Every command, in order, on a fresh clone


def fresh_clone(target: Path) -> Path:
    """The working tree as a clone of it would be (tracked files and untracked, not ignored ones), this
    environment's .venv linked in, and the test data beside it at ../shared/data."""
    clone = target / "cxr-distill"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file() and not source.is_symlink():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    (clone / ".venv").symlink_to(Path(sys.prefix))
    shared = target / "shared"
    shared.mkdir()
    (shared / "data").symlink_to(data_root().resolve())
    schema = REPO_ROOT.parent / "shared" / "monai"
    if schema.is_dir():
        (shared / "monai").symlink_to(schema.resolve())
    return clone


def run_block(block: Block, clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    # every command echoed as it starts (PS4 names the page); a failing one is named by the ERR trap
    script = ("set -eE -o pipefail\n"
              f"trap 'echo \"docs-test: {block.where}: failed (status $?): $BASH_COMMAND\" >&2' ERR\n"
              + block.script())
    if block.exit_status:
        script = script.replace("set -eE -o pipefail\n", "", 1)
    return subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("first_page", [first for first, group in page_groups().items()
                                        if any(not b.skip for page in group for b in parse_page(REPO_ROOT / page, page))])
def test_every_documented_command_runs_on_a_fresh_clone(first_page, tmp_path):
    if not (data_root() / "nih14_subset").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real data missing: {data_root()} (set CXR_DATA_ROOT)")
        pytest.skip(f"real data missing: {data_root()}")
    clone = fresh_clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CXR_DISTILL_TRACEBACK"))}
    env.update({"PYTHONPATH": str(clone), "CXR_DATA_ROOT": str(tmp_path / "shared" / "data"),
                "MPLBACKEND": "Agg", "HOME": str(tmp_path / "home")})
    ran = []
    for page in page_groups(clone)[first_page]:
        for block in parse_page(clone / page, page):
            if block.skip:
                continue
            started = time.monotonic()
            result = run_block(block, clone, env)
            ran.append(f"{block.where} {time.monotonic() - started:.0f} s")
            output = (result.stdout[-3000:] + "\n" + result.stderr[-6000:]).strip()
            assert result.returncode == block.exit_status, (
                f"{block.where}: exit status {result.returncode}, expected {block.exit_status}, running\n"
                f"{block.script()}\n--- output (tail) ---\n{output}")
    print(f"{len(ran)} blocks ran: {', '.join(ran)}")
