"""The README and docs/: a short front page, links that resolve, nothing outside the repository,
and README commands that the `mbgen` command line knows. No network; no run is started."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

from helpers import ROOT

README = os.path.join(ROOT, "README.md")
PAGES = [README, *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
FORBIDDEN = ("../shared", "PAPER.md", "shared/reference")  # files outside the repository
HELP_TIMEOUT_S = 120  # a fresh interpreter imports torch to build the parser: seconds on a busy machine

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def split_fences(text: str) -> tuple[list[str], list[str]]:
    """(lines outside fenced code blocks, lines inside them)."""
    outside, inside, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            inside.append(line)
        else:
            outside.append(line)
    return outside, inside


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation removed,
    spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: str) -> set[str]:
    """Every heading anchor of a markdown file (repeated headings get -1, -2, ... as on GitHub)."""
    outside, _ = split_fences(read(path))
    seen: dict[str, int] = {}
    found = set()
    for line in outside:
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: str) -> list[str]:
    """The targets of the inline links and images of a markdown file, outside code."""
    outside, _ = split_fences(read(path))
    text = re.sub(r"`[^`]*`", "", "\n".join(outside))  # inline code is not a link
    return LINK.findall(text)


def test_readme_is_a_front_page():
    lines = read(README).splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most 200: move detail to docs/)"
    text = "\n".join(lines)
    assert "make run" in text and "make test" in text


def test_every_docs_page_links_back_and_is_linked_from_the_readme():
    readme_links = {os.path.normpath(os.path.join(ROOT, t.split("#")[0])) for t in links(README)}
    for page in PAGES[1:]:
        assert page in readme_links, f"README.md does not link {os.path.relpath(page, ROOT)}"
        assert "../README.md" in links(page), f"{os.path.relpath(page, ROOT)} has no link back to the README"


def test_relative_links_resolve_inside_the_repository():
    problems = []
    for page in PAGES:
        where = os.path.relpath(page, ROOT)
        for target in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
                continue
            path, _, anchor = target.partition("#")
            file = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if os.path.commonpath([file, ROOT]) != ROOT:
                problems.append(f"{where}: {target} points outside the repository")
            elif not os.path.exists(file):
                problems.append(f"{where}: {target} does not exist")
            elif anchor and file.endswith(".md") and anchor not in anchors(file):
                problems.append(f"{where}: {target} names no heading of {os.path.relpath(file, ROOT)}")
    assert not problems, "\n".join(problems)


def test_nothing_points_outside_the_repository():
    problems = [
        f"{os.path.relpath(page, ROOT)}:{n}: {word}"
        for page in PAGES
        for n, line in enumerate(read(page).splitlines(), 1)
        for word in FORBIDDEN
        if word in line
    ]
    assert not problems, "\n".join(problems)


def readme_subcommands() -> list[str]:
    """The X of every `mbgen X` that starts a line in a code block of the README."""
    _, code = split_fences(read(README))
    found = {m.group(1) for line in code if (m := re.match(r"^\s*(?:\$\s*)?mbgen\s+([A-Za-z][\w-]*)", line))}
    return sorted(found)


def test_readme_commands_are_real_subcommands():
    subcommands = readme_subcommands()
    assert "run" in subcommands, subcommands
    # One fresh interpreter per distinct subcommand, all at once: each spends its seconds importing.
    procs = {
        sub: subprocess.Popen(
            [sys.executable, "-m", "mbgen.launch.cli", sub, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for sub in subcommands
    }
    failures = []
    for sub, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=HELP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            failures.append(f"mbgen {sub} --help: no answer in {HELP_TIMEOUT_S} s")
            continue
        if proc.returncode != 0:
            failures.append(f"mbgen {sub} --help exited {proc.returncode}: {err.strip()[-400:]}")
        elif f"mbgen {sub}" not in out:
            failures.append(f"mbgen {sub} --help printed no usage of `mbgen {sub}`")
    assert not failures, "\n".join(failures)
