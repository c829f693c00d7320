"""Every relative link of README.md and docs/*.md leads somewhere: to a file of the
repository and, with an `#anchor`, to a heading of that file (GitHub's slugs); and the
README stays a front door of at most 300 lines."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 300

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
CODE_SPAN = re.compile(r"(`+).+?\1")
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    lines, fence = [], ""
    for number, line in enumerate(text.splitlines(), start=1):
        opened = FENCE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = ""
            continue
        if opened:
            fence = opened.group(1)
            continue
        lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lower case, punctuation
    dropped, spaces as '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, repeated headings numbered as GitHub does (-1, -2, …)."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(text):
        bare = CODE_SPAN.sub("", line)
        found += [(number, target) for target in INLINE_LINK.findall(bare)]
        found += [(number, target) for target in REFERENCE_LINK.findall(bare)]
    return found


def broken_links(text: str, source: Path) -> list[str]:
    """What is wrong with each relative link of ``text`` (the Markdown file ``source``)."""
    problems = []
    label = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    for number, target in links(text):
        if URL_SCHEME.match(target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        where = f"{label}:{number}: {target!r}"
        if path.startswith("/"):
            problems.append(f"{where} is an absolute path")
            continue
        resolved = (source.parent / path).resolve() if path else source
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{where} leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where} names no file of the repository")
        elif anchor:
            if resolved.suffix.lower() != ".md" or resolved.is_dir():
                problems.append(f"{where} has an anchor into a file that is not Markdown")
            elif anchor not in anchors(resolved.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading of {resolved.name} has the anchor")
    return problems


def test_every_relative_link_leads_to_a_file_and_a_heading() -> None:
    problems = [
        problem
        for document in documents()
        for problem in broken_links(document.read_text(encoding="utf-8"), document)
    ]
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): "
        "move the details to docs/ and link them"
    )


def test_the_readme_leads_to_every_page_of_the_documentation() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {target.partition("#")[0] for _, target in links(readme)}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in linked, f"README.md links no docs/{page.name}"


def test_slugs_are_githubs() -> None:
    assert slug("Live events: GET /jobs/{job_id}/events") == "live-events-get-jobsjob_idevents"
    assert slug("Deleting, and retention") == "deleting-and-retention"
    assert slug("Named model_dirs") == "named-model_dirs"
    assert slug("Running locally: make run") == "running-locally-make-run"
    assert slug("The storage layout (`k2e/storage.py`)") == "the-storage-layout-k2estoragepy"
    assert slug("[Links](x.md) and more") == "links-and-more"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n### A\n") == {"a", "a-1", "a-2"}


def test_the_check_catches_what_it_is_for() -> None:
    """Run on a page of docs/ (a real file, so that repository paths resolve): a missing
    file, a missing anchor in another page or in its own, and a parent folder outside the
    repository are found; good links, web addresses and links in code are not."""
    page = ROOT / "docs" / "api.md"
    bad = [
        "[gone](nothing-here.md)",
        "[anchor](operations.md#no-such-heading)",
        "[own](#no-such-heading)",
        "[out](../../outside.md)",
        "[abs](/etc/passwd)",
        "[ref]: settings.md#nowhere",
    ]
    good = [
        "[ops](operations.md#fairness)",
        "[own](#routes)",
        "[picture](dashboard-job.png)",
        "[spec](https://spec.openapis.org/oas/v3.1.0#paths)",
        "`[not a link](nowhere.md)`",
        "```\n[in code](nowhere.md)\n```",
    ]
    for text in bad:
        assert broken_links(text, page), text
    for text in good:
        assert not broken_links(text, page), text
