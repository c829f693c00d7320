"""The documentation stands alone: the generated reference is current, and no Markdown file
points outside the repository."""

import importlib.util
import json
import os
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]

# Folders that hold no documentation of k2e's own (tooling, caches, run data).
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    "data",
}
SKIPPED_PATHS = {Path("bench/out")}
EXPECTED = {
    Path("README.md"),
    Path("bench/README.md"),
    Path("docs/api.md"),
    Path("docs/architecture.md"),
    Path("docs/development.md"),
    Path("docs/fidelity.md"),
    Path("docs/operations.md"),
    Path("docs/reference.md"),
    Path("docs/security.md"),
    Path("docs/settings.md"),
    Path("docs/usage.md"),
}

# Text that names something outside the repository: a parent folder (documents name
# repository files by their path from the root, never relative to their own folder),
# the design file the docs were first written against, and absolute host paths.
OUTSIDE = [
    (re.compile(r"\.\.[/\\]"), "a parent-folder path"),
    (re.compile(r"shared/DESIGN", re.IGNORECASE), "the design file outside the repository"),
    (
        re.compile(
            r"(?<![\w.~>}-])/(?:work|home|Users|root|tmp|mnt|srv|opt|var|etc|private|workspace)/"
        ),
        "an absolute host path",
    ),
    (re.compile(r"(?<![\w.-])~/"), "a home-folder path"),
    (re.compile(r"file://", re.IGNORECASE), "a file:// URL"),
]
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _generator() -> ModuleType:
    path = ROOT / "scripts" / "gen_api_reference.py"
    spec = importlib.util.spec_from_file_location("gen_api_reference", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_files() -> list[Path]:
    """Every Markdown file of the repository, relative to its root."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        here = Path(folder).relative_to(ROOT)
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIPPED_DIRS
            and not d.endswith(".egg-info")
            and here / d not in SKIPPED_PATHS
        )
        found += [here / name for name in sorted(files) if name.lower().endswith(".md")]
    return found


def link_targets(text: str) -> list[str]:
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def outside_pointers(text: str, folder: Path, label: str) -> list[str]:
    """Where ``text`` (a Markdown file in ``folder``, named ``label`` in messages) names or
    links something outside the repository, or links a repository file that does not exist."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        for pattern, what in OUTSIDE:
            for match in pattern.finditer(line):
                problems.append(f"{label}:{number}: {what}: {match.group(0)!r} in {line!r}")
    for target in link_targets(text):
        if URL_SCHEME.match(target) or target.startswith("#"):
            continue  # a web address, or an anchor in the same page
        path = target.split("#", 1)[0]
        if path.startswith("/"):
            problems.append(f"{label}: link {target!r} is an absolute path")
            continue
        resolved = (folder / path).resolve()
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{label}: link {target!r} leaves the repository")
        elif not resolved.exists():
            problems.append(f"{label}: link {target!r} names no file of the repository")
    return problems


def test_the_api_reference_is_generated_from_the_committed_spec() -> None:
    generator = _generator()
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    rendered = generator.render(spec)
    assert rendered == generator.render(spec), "the reference must be deterministic"
    committed = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert committed == rendered, (
        "docs/reference.md is stale: run `make docs` (after `make openapi`) and commit"
    )


def test_the_reference_covers_every_operation_and_schema() -> None:
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    reference = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    for path, item in spec["paths"].items():
        for method in item:
            assert f"### {method.upper()} {path}\n" in reference, (method, path)
    for name in spec["components"]["schemas"]:
        assert f"### {name}\n" in reference, name


def test_no_markdown_file_points_outside_the_repository() -> None:
    files = markdown_files()
    assert set(files) >= EXPECTED, f"missing documents: {sorted(EXPECTED - set(files))}"
    problems = [
        problem
        for relative in files
        for problem in outside_pointers(
            (ROOT / relative).read_text(encoding="utf-8"), (ROOT / relative).parent, str(relative)
        )
    ]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_are_for() -> None:
    """Each kind of outside pointer is found; API routes, repository paths and web
    addresses are not."""
    outside = [
        "See `../shared/DESIGN.md`'s contract.",
        "The contract is in shared/DESIGN.md.",
        "[design](../DESIGN.md)",
        "Saved under /work/main/data.",
        "[x](/etc/passwd)",
        "Put it in ~/models.",
        "[gone](docs/nothing-here.md)",
    ]
    inside = [
        "`GET /jobs/{id}`, `/models/{model_id}` and `data/storage/jobs/<id>`",
        "`<root>/tmp/`, `${K2E_DATA_DIR}/tmp/` and `<model_dir>/export/<version>/`",
        "[guide](docs/api.md), [results](bench/RESULTS.md#figures), [top](#layout)",
        "[spec](https://spec.openapis.org/oas/v3.1.0), `postgresql://user@host/db`",
        "`keras_model_path` must be relative, without `..`",
    ]
    for text in outside:
        assert outside_pointers(text, ROOT, "sample.md"), text
    for text in inside:
        assert not outside_pointers(text, ROOT, "sample.md"), text
