"""The README's worked examples, run as a reader would run them, against a live server.

The curl walk-through of "A session with curl", "Manage a run" and "Watch a run" runs block
after block in one shell (as one copies them into a terminal), and every answer the README
shows in full — no "…" in it — must be what the server answers. The Python client's first
example runs as a script and must reach the weights it says it reaches. So the front door
stays true when the service changes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from tests.conftest import sqlite_url
from tests.live_server import REPO_ROOT, source_environment

README = REPO_ROOT / "README.md"
README_URL = "http://127.0.0.1:8000"
CURL_SECTIONS = ("A session with curl", "Manage a run", "Watch a run")
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)
MARKER = "=== optaas README block ==="


@dataclass(frozen=True)
class Block:
    section: str
    language: str
    text: str


def readme_blocks() -> list[Block]:
    """Every fenced code block of the README, with the `## ` section it stands in."""
    blocks = []
    for section in re.split(r"\n(?=## )", README.read_text()):
        title = section.split("\n", 1)[0].removeprefix("## ")
        blocks += [Block(title, language, text) for language, text in BLOCK.findall(section)]
    return blocks


def walkthrough() -> list[tuple[Block, Block | None]]:
    """The curl blocks of the walk-through, each with the answer the README shows after it."""
    blocks = [b for b in readme_blocks() if b.section.startswith(CURL_SECTIONS)]
    pairs = []
    for index, block in enumerate(blocks):
        if block.language == "sh":
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            shown = following if following is not None and following.language != "sh" else None
            pairs.append((block, shown))
    return pairs


@pytest.fixture(scope="module")
def server(module_start_server, tmp_path_factory):
    return module_start_server(sqlite_url(tmp_path_factory.mktemp("readme")))


def run_in_one_shell(scripts: list[str], url: str, cwd) -> list[str]:
    """Each script's output, the scripts run one after the other in one bash (so variables set
    by one are there for the next, as in a terminal)."""
    program = "set -e\n" + "".join(
        f"echo '{MARKER}'\n{script.replace(README_URL, url)}\necho\n" for script in scripts
    )
    result = subprocess.run(
        ["bash", "-c", program], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [part.strip() for part in result.stdout.split(MARKER + "\n")[1:]]


def test_the_walkthrough_finds_something_to_check():
    pairs = walkthrough()
    exact = [shown for _, shown in pairs if shown is not None and "…" not in shown.text]
    assert len(pairs) >= 10 and len(exact) >= 3


@pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq")), reason="the walk-through needs curl and jq"
)
def test_the_curl_walkthrough_answers_what_the_readme_shows(server, tmp_path):
    pairs = walkthrough()
    # A reader waits out the 30 s of the wait example; here half a second shows the same 408.
    scripts = [block.text.replace("timeout=30", "timeout=0.5") for block, _ in pairs]
    outputs = run_in_one_shell(scripts, server.url, tmp_path)
    assert len(outputs) == len(pairs)
    checked = 0
    for (block, shown), output in zip(pairs, outputs, strict=True):
        if shown is None or "…" in shown.text or shown.language != "json":
            continue
        expected = json.loads(shown.text.replace('timeout":30.0', 'timeout":0.5'))
        answer = json.loads(output)
        if answer.get("type") == "/problems/wait-timeout":
            expected["detail"] = expected["detail"].replace("30 s", "0.5 s")
        assert answer == expected, block.text
        checked += 1
    assert checked >= 3


def test_the_python_client_example_reaches_the_weights_it_shows(server, tmp_path):
    example = next(
        block.text for block in readme_blocks()
        if block.section == "Python client" and block.language == "python"
    )  # fmt: skip
    script = tmp_path / "example.py"
    script.write_text(example.replace(README_URL, server.url))
    env = source_environment(NO_PROXY="127.0.0.1")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    printed_w = result.stdout.splitlines()[0]
    shown_w = re.search(r"print\(params\[\"w\"\]\)\s+# (\[.*\])", example).group(1)
    np.testing.assert_allclose(_numbers(printed_w), _numbers(shown_w), atol=1e-3)
    assert "'step': 300" in result.stdout.splitlines()[1]


def _numbers(text: str) -> list[float]:
    return [float(number) for number in re.findall(r"-?\d+\.?\d*(?:e-?\d+)?", text)]
