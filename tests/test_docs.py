"""The project explains itself: its docs live in the repository and their links resolve."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["architecture.md", "guarantees.md", "fault-tests.md", "extending.md"]
#: Planning files that lived beside the repository, never in it.
OUTSIDE = re.compile(r"\b(DESIGN|RELIABILITY|STYLE|BENCHMARKS)\.md\b|\.\./shared\b|/work/shared\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def tracked_files() -> list[Path]:
    """The repository's files: git's list in a checkout, else every file under the root."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        skipped = {".git", ".venv", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skipped & set(p.parts)]
    return [ROOT / name for name in listing.stdout.decode().split("\0") if name]


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(page: Path) -> list[str]:
    """Link targets in ``page`` outside code blocks that are neither URLs nor in-page anchors."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def test_no_file_cites_a_file_outside_the_repository() -> None:
    me = Path(__file__).resolve()
    citing = []
    for path in tracked_files():
        if path.resolve() == me or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        citing += [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
                   for m in OUTSIDE.finditer(text)]
    assert citing == []


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file_in_the_repository(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() or ROOT not in path.parents:
            broken.append(target)
    assert broken == []


def test_the_readme_links_every_doc() -> None:
    links = set(relative_links(ROOT / "README.md"))
    assert {f"docs/{name}" for name in DOCS} <= links
    assert sorted(p.name for p in (ROOT / "docs").glob("*.md")) == sorted(DOCS)


def test_every_test_the_fault_catalogue_names_exists() -> None:
    defined = {m.group(1) for path in (ROOT / "tests").rglob("test_*.py")
               for m in re.finditer(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.MULTILINE)}
    named = set(re.findall(r"\b(test_\w+)(?!\.py)\b", (ROOT / "docs" / "fault-tests.md").read_text()))
    assert named and sorted(named - defined) == []
