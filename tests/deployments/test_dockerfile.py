"""deployments/Dockerfile: Docker cannot run here, so the image's build steps are checked as text. The
image runs ``pip install .`` on what was copied, so every package pyproject installs must be copied in:
a package left out installs nothing, and the flow run fails on its first import."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deployments" / "Dockerfile"


def installed_packages() -> set[str]:
    """The top-level packages of pyproject's ``[tool.setuptools.packages.find]`` include list."""
    # read as text: tomllib is 3.11+, and the project supports 3.10
    section = (REPO / "pyproject.toml").read_text().split("[tool.setuptools.packages.find]", 1)[1].split("\n[", 1)[0]
    match = re.search(r"^include\s*=\s*(\[.*?\])", section, re.MULTILINE | re.DOTALL)
    assert match, "pyproject.toml has no include list under [tool.setuptools.packages.find]"
    return {pattern.rstrip("*").rstrip(".") for pattern in ast.literal_eval(match.group(1))}


def copied_sources(dockerfile: str) -> set[str]:
    """The top-level paths the Dockerfile's ``COPY`` instructions take from the build context."""
    sources: set[str] = set()
    for line in dockerfile.splitlines():
        if line.split(maxsplit=1)[:1] != ["COPY"]:
            continue  # other instructions, comments, continuation lines
        paths = [word for word in shlex.split(line, comments=True)[1:] if not word.startswith("--")]
        sources.update(Path(p).parts[0] for p in paths[:-1])  # the last path is the destination
    return sources


def test_copy_lines_are_read_as_sources_without_the_destination() -> None:
    text = "COPY pyproject.toml README.md ./\nCOPY --chown=1:1 storage ./storage\n# COPY models /models\n"
    assert copied_sources(text) == {"pyproject.toml", "README.md", "storage"}


def test_every_installed_package_is_copied_into_the_image() -> None:
    packages = installed_packages()
    assert {"common", "inversion", "storage", "tasks", "flows", "reports", "toyworld"} <= packages
    missing = packages - copied_sources(DOCKERFILE.read_text())
    assert not missing, f"deployments/Dockerfile does not COPY {', '.join(sorted(missing))}"
