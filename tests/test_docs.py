"""The repository stands alone: its docs are in docs/, every reference to them resolves, nothing
points at files outside the clone, and the architecture the docs describe is the one in the tree
(the module map names every module, drivers/ never imports scanner/, the pure core does no I/O)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
OWN_DOCS = ("architecture.md", "credentials.md", "durability.md", "hardware.md")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".sh", ".service", ".html", ".txt", ".cfg", ""}


def repo_files() -> list[Path]:
    """Files git would put in a clone (tracked or new, not ignored), text ones only."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.split("\n")
        paths = [ROOT / line for line in out if line]
    except (OSError, subprocess.SubprocessError):  # a tarball without .git
        skip = {".venv", ".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
        paths = [p for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)]
    return sorted(p for p in paths if p.is_file() and p.suffix in TEXT_SUFFIXES
                  and "fixtures" not in p.relative_to(ROOT).parts)


def flat(text: str) -> str:
    """Text with line breaks, comment markers and indentation folded into single spaces, so a
    reference broken over two comment or docstring lines still reads as one."""
    return re.sub(r"\s*\n\s*(?:#+\s*)?", " ", text)


# Built from parts, so this file does not match itself.
OLD_NOTES = "|".join(["CODES", "ARCHITECTURE", "RECORDS", "HARDWARE"])
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "/work" + "/", r"\bshared/" + "(?:notes|fixtures)",
                               r"\b(?:" + OLD_NOTES + r")(?:\.md|\s+\d)"]))


def test_our_docs_exist_and_are_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in OWN_DOCS:
        assert (DOCS / name).is_file(), name
        assert f"docs/{name}" in readme, f"README does not point to docs/{name}"


def test_nothing_points_outside_the_repository() -> None:
    hits = []
    for path in repo_files():
        if path == Path(__file__).resolve():
            continue
        text = flat(path.read_text(encoding="utf-8", errors="replace"))
        hits += [f"{path.relative_to(ROOT)}: {m.group(0)!r}" for m in OUTSIDE.finditer(text)]
    assert not hits, "references to files a clone does not have: " + "; ".join(hits)


def test_the_guard_would_catch_the_old_references() -> None:
    for old in ("see ../" + "shared/ARCHITECTURE.md", "(" + "CODES.md section 3)", "RECORDS" + " 6.9's budget",
                "Path('/work" + "/shared/fixtures')", "HARDWARE" + ".md 2.4"):
        assert OUTSIDE.search(old), old


SECTION_REF = re.compile(r"docs/([\w-]+\.md)`?,? sections? (\d+(?:(?:, | and )\d+)*)")


def test_every_docs_reference_names_a_file_and_a_section_that_exist() -> None:
    headings = {name: {int(n) for n in re.findall(r"^## (\d+)\.", (DOCS / name).read_text(encoding="utf-8"), re.M)}
                for name in OWN_DOCS}
    problems, seen = [], 0
    for path in repo_files():
        text = flat(path.read_text(encoding="utf-8", errors="replace"))
        for name in set(re.findall(r"docs/([\w.-]+\.(?:md|yaml))", text)):
            if not (DOCS / name).is_file():
                problems.append(f"{path.relative_to(ROOT)}: docs/{name} does not exist")
        for m in SECTION_REF.finditer(text):
            seen += 1
            for n in map(int, re.findall(r"\d+", m.group(2))):
                if n not in headings.get(m.group(1), set()):
                    problems.append(f"{path.relative_to(ROOT)}: docs/{m.group(1)} has no section {n}")
    assert not problems, "; ".join(problems)
    assert seen >= 40  # the code cites the docs by section: the pattern must be finding them


def test_relative_links_in_the_markdown_resolve() -> None:
    broken = []
    for md in [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted((ROOT / "tests").rglob("README.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", md.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (md.parent / target.split("#")[0]).exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def modules() -> list[Path]:
    return sorted(p for d in ("scanner", "scanner/credentials", "scanner/sync", "drivers")
                  for p in (ROOT / d).glob("*.py") if p.name != "__init__.py")


def test_the_module_map_names_every_module() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(ROOT)) for p in modules()
               if not (p.name in text or (p.name.startswith("cli_") and "cli_*.py" in text))]
    assert not missing, f"add these to the module map in docs/architecture.md section 2: {missing}"


def imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                pkg = path.relative_to(ROOT).with_suffix("").parts[:-node.level]
                base = ".".join([*pkg, base] if base else pkg)
            out.add(base)
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "drivers").glob("*.py")), ids=lambda p: p.name)
def test_drivers_never_import_scanner(path: Path) -> None:
    assert not [m for m in imports(path) if m == "scanner" or m.startswith("scanner.")]


# The pure core (docs/architecture.md section 1): values in, values out, no I/O.
PURE = ["scanner/policy.py", "scanner/passage.py", "scanner/screening.py", "scanner/models.py", "scanner/reasons.py",
        "scanner/credentials/verify.py", "scanner/credentials/envelope.py", "scanner/credentials/claims.py",
        "scanner/credentials/cose.py", "scanner/credentials/status.py"]
IO_MODULES = ("sqlite3", "socket", "requests", "urllib3", "tornado", "http", "subprocess", "shutil", "smbus2",
              "gpiozero", "cv2", "drivers", "scanner.store", "scanner.sync", "scanner.service", "scanner.hardware")


@pytest.mark.parametrize("name", PURE)
def test_the_pure_core_imports_no_io(name: str) -> None:
    bad = [m for m in imports(ROOT / name) if any(m == io or m.startswith(io + ".") for io in IO_MODULES)]
    assert not bad, f"{name} imports {bad}"
