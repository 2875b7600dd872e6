"""The README's examples, taken from the README itself so they cannot drift.

Which examples run: a fenced ```bash or ```python block whose fence comes right after a line
starting `<!-- readme-test: run` (an HTML comment, invisible on the rendered page). Mark only
examples that need no camera, stream, server, database, network or long training; every other
block stays unmarked and is not run. Marked bash blocks run in document order, each with
`bash -euo pipefail`, in one temporary folder with this test environment's `bin` (its installed
`maskwatch`) first on PATH; marked Python blocks run in document order as one script, in the
same folder. The folder holds real photos and a short video under the names the examples use:
clip.mp4, photos/, shots/*.jpg and people/ (a face crop, a photo of people, a blank picture).

Every `maskwatch` command line in any bash block, marked or not, is also checked against the
parser: its command exists and every `--option` it names is one that command takes.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MIRROR, REPO, THREE_FACES, render_video

README = REPO / "README.md"
RUN_MARKER = "<!-- readme-test: run"
FENCE = re.compile(r"^```(\w*)\s*$")
ENV_SETTING = re.compile(r"[A-Z_]+=")  # VARIABLE=value before a command
# Another sample photo: eight people, most of them small in the frame.
GROUP_PHOTO = MIRROR / "05fe38c36a13204e986c5558169cf0d4.jpg"


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    run: bool


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of the README with its language and whether it is marked to run."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marked = i > 0 and lines[i - 1].startswith(RUN_MARKER)
        blocks.append(Block(opening.group(1), "\n".join(lines[i + 1 : end]), i + 1, marked))
        i = end + 1
    return blocks


def maskwatch_commands(code: str) -> list[list[str]]:
    """The `maskwatch ...` command lines of a shell block, as words (continuations joined,
    comments dropped)."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote: not a line to check
            continue
        for start, word in enumerate(words):
            before = words[start - 1] if start else "&&"
            if word == "maskwatch" and (before in {"&&", ";", "|"} or ENV_SETTING.match(before)):
                commands.append(words[start + 1 :])
    return commands


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory: pytest.TempPathFactory, three_faces: np.ndarray) -> Path:
    """A folder holding, under the README's names, the files its examples read."""
    folder = tmp_path_factory.mktemp("readme")
    render_video(folder / "clip.mp4", three_faces, frames=12, size=(480, 360))
    for name, photo in (("photos", THREE_FACES), ("shots", THREE_FACES)):
        (folder / name).mkdir()
        (folder / name / "a.jpg").symlink_to(photo)
        (folder / name / "b.jpg").symlink_to(GROUP_PHOTO)
    people = folder / "people"
    people.mkdir()
    cv2.imwrite(str(people / "a.jpg"), three_faces[60:260, 300:430])  # one face, cut tight
    (people / "b.jpg").symlink_to(GROUP_PHOTO)
    cv2.imwrite(str(people / "blank.png"), np.full((200, 200, 3), 180, np.uint8))
    return folder


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_readme_marks_the_examples_a_newcomer_tries_first() -> None:
    """The rule finds the usage examples and the Python example; a change to the marker or to
    those sections that loses them fails here rather than quietly testing nothing."""
    marked = [b for b in BLOCKS if b.run]
    assert any(b.language == "bash" and "maskwatch classify" in b.code for b in marked)
    assert any(b.language == "python" and "pipeline.process" in b.code for b in marked)
    assert all(b.language in {"bash", "python"} for b in marked)


def test_every_maskwatch_command_in_the_readme_names_real_options() -> None:
    from maskwatch.cli import build_parser

    parser = build_parser()
    commands = {
        name: sub
        for action in parser._subparsers._group_actions  # type: ignore[union-attr]
        for name, sub in action.choices.items()
    }
    checked = 0
    for block in (b for b in BLOCKS if b.language == "bash"):
        for words in maskwatch_commands(block.code):
            where = f"README line {block.line}: maskwatch {' '.join(words)}"
            assert words and words[0] in commands, where
            sub = commands[words[0]]
            if words[0] == "data":
                sub = sub._subparsers._group_actions[0].choices[words[1]]  # type: ignore[union-attr]
            known = set(sub._option_string_actions)
            for word in words[1:]:
                if word.startswith("--"):
                    assert word.split("=")[0] in known, f"{where}: no option {word}"
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.run and b.language == "bash"], ids=lambda b: f"line{b.line}"
)
def test_readme_shell_example_runs_as_written(block: Block, example_folder: Path) -> None:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=example_folder,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"README line {block.line}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr


def test_readme_python_examples_run_as_written(example_folder: Path) -> None:
    script = "\n\n".join(b.code for b in BLOCKS if b.run and b.language == "python")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=example_folder,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith('{"source": "photos/') and '"faces": [{"box"' in lines[0]
    assert any(line.split()[1:2] == ["face"] for line in lines)  # people/a.jpg, a tight crop
    assert any(line.startswith("appear ") for line in lines)  # events of clip.mp4


def test_install_hints_the_program_prints_match_the_readme() -> None:
    """maskwatch is installed from its checkout, so extras are `pip install '.[extra]'`."""
    from maskwatch.errors import MissingExtraError

    assert "pip install '.[web]'" in str(MissingExtraError("serve", "web"))
    assert "pip install '.[web]'" in README.read_text(encoding="utf-8")
    for path in (REPO / "src").rglob("*.py"):
        assert "pip install 'maskwatch[" not in path.read_text(encoding="utf-8"), path
