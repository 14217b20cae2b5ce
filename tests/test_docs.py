"""The documentation: the Sphinx site in docs/ builds without a warning, every relative link
in README.md and docs/ leads to a file that exists, the README stays a front page, and
nothing names a file that is not part of the project."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

#: ``[text](target)`` and ``![alt](target)`` (the text may run over lines), with an optional
#: ``"title"`` after the target
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`]*`")


def markdown_pages() -> list[Path]:
    """README.md, CHANGELOG.md and every Markdown page of the site (not the build)."""
    pages = [README, ROOT / "CHANGELOG.md"]
    pages += sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)
    return pages


def links_of(text: str) -> list[str]:
    """The link and image targets of a Markdown text, outside fenced code and code spans."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            kept.append("")
        else:
            kept.append("" if fenced else line)
    targets = []
    for paragraph in "\n".join(kept).split("\n\n"):
        targets += LINK.findall(CODE_SPAN.sub("", paragraph))
    return targets


def local_target(target: str) -> str | None:
    """The file part of a link to a local file, or None (a URL, mail, or a pure anchor)."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
        return None
    return target.split("#", 1)[0] or None


def test_the_link_parser_finds_links_and_images() -> None:
    text = (
        "See [a](docs/a.md#part), ![img](b.png) and [web](https://x.org), [m](mailto:a@b),\n"
        "[anchor](#here), `[code](not-a-link.md)`, [over\ntwo lines](c.md).\n\n"
        "```\n[fenced](nope.md)\n```\n"
    )
    targets = links_of(text)
    assert targets == ["docs/a.md#part", "b.png", "https://x.org", "mailto:a@b", "#here", "c.md"]
    local = [local_target(t) for t in targets]
    assert local == ["docs/a.md", "b.png", None, None, None, "c.md"]


def test_every_relative_link_leads_to_an_existing_file() -> None:
    broken = []
    for page in markdown_pages():
        for target in links_of(page.read_text(encoding="utf-8")):
            path = local_target(target)
            if path is not None and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    # CI runs the README's set-up and test commands
    text = "\n".join(lines)
    assert '```bash\npip install -e ".[dev]"\n```' in text
    assert "## Test\n\n```bash\npython -m pytest\n```" in text


def test_no_file_names_a_document_outside_the_project() -> None:
    folders = ["docs", "experiments", "doll_core", "plugins"]
    files = [README, ROOT / "CHANGELOG.md"]
    for folder in folders:
        files += [
            p
            for p in sorted((ROOT / folder).rglob("*"))
            if p.is_file()
            and p.suffix in {".md", ".py", ".toml", ".txt", ".json", ".csv"}
            and "_build" not in p.parts
            and "__pycache__" not in p.parts
        ]
    mentions = [
        str(p.relative_to(ROOT))
        for p in files
        if "DESIGN.md" in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert mentions == []


def test_every_page_is_in_a_toctree() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^([\w/.-]+)$", index, flags=re.MULTILINE))
    pages = {
        str(p.relative_to(DOCS).with_suffix(""))
        for p in DOCS.rglob("*.md")
        if p.name != "index.md" and "_build" not in p.relative_to(DOCS).parts
    }
    assert pages - listed == set()


def test_the_site_builds_without_warnings(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    command += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "index.html").is_file()


def test_the_generated_reference_pages_are_current() -> None:
    """docs/reference/ is what ``python -m doll_core.reference_docs`` writes from the
    settings models and the protocols: a setting or plugin added, renamed or given other
    help without regenerating the pages fails here."""
    from doll_core.reference_docs import stale_pages

    assert stale_pages(ROOT) == [], "run: python -m doll_core.reference_docs"


def test_the_settings_reference_has_every_settings_class_an_experiment_holds() -> None:
    """The reference lists its tables by hand (each with a name an experiment file uses):
    every settings class reachable from an experiment must be one of them, so that a new
    section or nested model cannot be left out of the docs."""
    import typing

    from doll_core.configuration import declared_fields
    from doll_core.experiment.sections import Experiment
    from doll_core.reference_docs import _sections

    def held(annotation: object) -> list[type]:
        found = [annotation] if declared_fields(annotation) else []  # type: ignore[arg-type]
        return found + [c for arg in typing.get_args(annotation) for c in held(arg)]

    reachable, pending = set(), [Experiment]
    while pending:
        model = pending.pop()
        if model not in reachable:
            reachable.add(model)
            pending += [c for f in declared_fields(model).values() for c in held(f.annotation)]
    listed = {model for _, model, _ in _sections()}
    assert len(reachable) > 10
    assert sorted(m.__name__ for m in reachable - listed) == []
