"""The README and docs/ link to files and headings that exist (the benchmark pages link to each other a lot)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", page.read_text())  # a '#' comment in a code block is not a heading
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def local_links(page: Path) -> list[str]:
    return [link for link in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", link)]


def test_anchor_rule():
    assert github_anchor("Sucholutsky & Schonlau's targets (issue 2)") == "sucholutsky--schonlaus-targets-issue-2"
    assert github_anchor("Cost of long unrolls") == "cost-of-long-unrolls"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    broken = []
    for link in local_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_every_benchmark_page_is_linked_from_benchmarks_md():
    linked = {link.partition("#")[0] for link in local_links(ROOT / "docs" / "benchmarks.md")}
    pages = {p.name for p in (ROOT / "docs").glob("benchmarks-*.md")}
    assert pages and pages <= linked, f"not linked from docs/benchmarks.md: {sorted(pages - linked)}"
