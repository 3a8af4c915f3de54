"""The README's walk-through and the guide's worked examples, run as a reader runs them.

A page's command blocks (`sh`, `python`) run one after the other, in the order printed, in one
bash against a live server — variables set by one block are there for the next, as in a
terminal. The block printed right after a command (`json` or `text`) is what the command must
print, to the last digit; "…" in it stands for text that differs from run to run (an id, a
time). A command printed without an answer must print nothing. So an order bug fails (a session
deleted before a later block uses `$ID` answers 404, not what the page shows), and so does an
answer that no longer reads as printed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import sqlite_url
from tests.live_server import REPO_ROOT, source_environment

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("curl") and shutil.which("jq")),
        reason="the walk-throughs need curl and jq",
    ),
]

README = REPO_ROOT / "README.md"
PAGE_URL = "http://127.0.0.1:8000"
COMMANDS = ("sh", "python")
ANSWERS = ("json", "text")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
MARKER = "=== optaas walk-through block ==="
# The pages whose examples run, and the `## ` sections of each that hold them (None: all).
WALKTHROUGHS = {
    "README.md": ("Five minutes with curl", "Five minutes with Python"),
    "docs/sessions.md": None,
    "docs/python-client.md": None,
}


@dataclass(frozen=True)
class Block:
    section: str
    language: str
    text: str


@dataclass(frozen=True)
class Step:
    """A command block and the answer printed after it (None: it must print nothing)."""

    command: Block
    answer: Block | None


def page_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a page, in order, with the `## ` section it stands in."""
    blocks = []
    for section in re.split(r"\n(?=## )", path.read_text()):
        title = section.split("\n", 1)[0].removeprefix("## ")
        blocks += [Block(title, language, text) for language, text in BLOCK.findall(section)]
    return blocks


def walkthrough(page: str) -> list[Step]:
    """The page's command blocks in order, each with the answer block that follows it."""
    sections = WALKTHROUGHS[page]
    blocks = [
        block for block in page_blocks(REPO_ROOT / page)
        if sections is None or block.section.startswith(sections)
    ]  # fmt: skip
    steps = []
    for index, block in enumerate(blocks):
        if block.language in COMMANDS:
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            answer = following if following and following.language in ANSWERS else None
            steps.append(Step(block, answer))
    return steps


def as_shell(block: Block, url: str) -> str:
    """The block as bash runs it: sh as it is, Python fed to this interpreter on stdin."""
    text = block.text.replace(PAGE_URL, url)
    if block.language == "python":
        return f"{shlex.quote(sys.executable)} - <<'OPTAAS_PYTHON'\n{text}OPTAAS_PYTHON\n"
    return text


def run_in_order(steps: list[Step], url: str, cwd: Path) -> list[str]:
    """What each step printed, the steps run one after the other in one bash."""
    program = "".join(f"echo '{MARKER}'\n{as_shell(step.command, url)}\n" for step in steps)
    result = subprocess.run(
        ["bash", "-c", program], cwd=cwd, capture_output=True, text=True, timeout=600,
        env=source_environment(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1"),
    )  # fmt: skip
    outputs = [part.strip() for part in result.stdout.split(MARKER + "\n")[1:]]
    assert len(outputs) == len(steps), result.stderr
    return outputs


def _flat(text: str, language: str) -> str:
    """JSON as printed on the page (wrapped lines go on after one space) back on one line."""
    return text.strip().replace("\n ", "") if language == "json" else text.strip()


def answers_as_printed(answer: Block | None, output: str) -> bool:
    """Whether a command's output is the answer printed after it ("…": any text)."""
    if answer is None:
        return output == ""
    shown = _flat(answer.text, answer.language)
    if answer.language == "json" and "…" not in shown:
        try:
            return json.loads(output) == json.loads(shown)
        except ValueError:
            return False
    pattern = ".*?".join(re.escape(part) for part in shown.split("…"))
    return re.fullmatch(pattern, output, re.S) is not None


def mismatches(steps: list[Step], outputs: list[str]) -> list[str]:
    return [
        f"{step.command.text}\nprinted:\n{output}\npage shows:\n"
        f"{step.answer.text if step.answer else '(nothing)'}"
        for step, output in zip(steps, outputs, strict=True)
        if not answers_as_printed(step.answer, output)
    ]


@pytest.fixture(scope="module")
def server(module_start_server, tmp_path_factory):
    return module_start_server(sqlite_url(tmp_path_factory.mktemp("walkthrough")))


@pytest.mark.parametrize("page", sorted(WALKTHROUGHS))
def test_the_page_runs_top_to_bottom_as_printed(page, server, tmp_path):
    steps = walkthrough(page)
    assert len(steps) >= 3 and sum(step.answer is not None for step in steps) >= 3
    outputs = run_in_order(steps, server.url, tmp_path)
    problems = mismatches(steps, outputs)
    assert not problems, "\n\n".join(problems)


def test_the_readme_in_another_order_fails(server, tmp_path):
    """The check sees order: the deletion moved right after the creation breaks what follows."""
    steps = walkthrough("README.md")
    deletion = next(step for step in steps if "-X DELETE" in step.command.text)
    reordered = [steps[0], deletion, *[step for step in steps[1:] if step is not deletion]]
    outputs = run_in_order(reordered, server.url, tmp_path)
    failing = mismatches(reordered, outputs)
    assert len(failing) >= 4  # the step, the refusal, the PATCH and fork, the export …


def test_the_readmes_test_command_is_the_one_ci_runs():
    two_commands = [b.text.strip() for b in page_blocks(README) if b.section == "Two commands"]
    assert two_commands == ["pip install . && optaas serve", "pip install -e '.[test]' && pytest"]
    assert two_commands[1] in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
