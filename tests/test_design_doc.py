"""Rule ids in code and tests resolve to rules defined in docs/design.md.

Docstrings, comments and test section headers cite the behavioural rules by id
("(R12)", "R26-R29", "# -- R21: ..."). A citation is only useful if the id means
something: this module parses the rule definitions out of the design document (the
headings, or list items, that start with ``R<n>``) and checks that

* the document defines exactly R1..R38, each once, in order;
* every id cited anywhere in ``perdure/**/*.py`` and ``tests/**/*.py`` is defined there
  (ranges such as ``R11-R14`` cite every id in between).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
RULE_COUNT = 38

# A citation: "R" then 1-2 digits without a leading zero, standing alone. The lookbehind
# refuses a letter, digit, underscore or dot before it (``CR12``, ``x.R1``, ``_R2``), the
# lookahead a word character after it (``R2D2``, ``R12a``, ``R100``), so hex strings,
# identifiers and version tags do not count. An optional range tail (``-R14``, en dash
# too) extends the citation to every id in between.
_CITE = re.compile(r"(?<![\w.])R([1-9]\d?)(?:\s*[-\u2013]\s*R([1-9]\d?))?(?!\w)")
# A definition: a markdown heading or a list item whose text starts with the id.
_DEFINE = re.compile(r"^(?:#{2,6}|[-*])\s+(?:\*\*)?R(\d+)\b", re.MULTILINE)


def rule_definitions(text: str) -> list[int]:
    """Rule ids in the order the document defines them (duplicates kept)."""
    return [int(n) for n in _DEFINE.findall(text)]


def citations(text: str) -> set[int]:
    """Every rule id a text cites, ranges expanded."""
    cited: set[int] = set()
    for match in _CITE.finditer(text):
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        cited.update(range(first, max(first, last) + 1))
    return cited


def _sources() -> list[Path]:
    files = [*(ROOT / "perdure").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    return sorted(p for p in files if "node_modules" not in p.parts)


def _cited_by_file() -> dict[int, list[str]]:
    where: dict[int, list[str]] = {}
    for path in _sources():
        for rule in citations(path.read_text(encoding="utf-8")):
            where.setdefault(rule, []).append(str(path.relative_to(ROOT)))
    return where


def test_design_defines_exactly_r1_to_r38_once_each() -> None:
    defined = rule_definitions(DESIGN.read_text(encoding="utf-8"))
    duplicates = sorted({n for n in defined if defined.count(n) > 1})
    assert not duplicates, f"rules defined more than once in docs/design.md: {duplicates}"
    missing = sorted(set(range(1, RULE_COUNT + 1)) - set(defined))
    assert not missing, f"rules missing from docs/design.md: {missing}"
    extra = sorted(set(defined) - set(range(1, RULE_COUNT + 1)))
    assert not extra, f"docs/design.md defines rules beyond R{RULE_COUNT}: {extra}"
    assert defined == sorted(defined), "docs/design.md defines its rules out of order"


def test_every_cited_rule_is_defined_in_the_design() -> None:
    defined = set(rule_definitions(DESIGN.read_text(encoding="utf-8")))
    cited = _cited_by_file()
    assert cited, "no rule citations found: the scan itself is broken"
    undefined = {f"R{n}": files for n, files in sorted(cited.items()) if n not in defined}
    assert not undefined, f"rules cited but not defined in docs/design.md: {undefined}"


def test_each_rule_says_where_it_lives() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    starts = [m.start() for m in _DEFINE.finditer(text)]
    ends = [*starts[1:], text.index("\n## ", starts[-1])]
    for start, end in zip(starts, ends, strict=True):
        body = text[start:end]
        rule = body.split("\n", 1)[0]
        assert "**Where:**" in body, f"{rule!r} has no Where: line"


# The parsers themselves. Ids outside R1..R38 are assembled at run time so that this
# file never cites a rule the document does not define.
_R = "R"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lifecycle (R1) and completion (R3).", {1, 3}),
        ("Waiting checkpoints (R2, R11-R14).", {2, 11, 12, 13, 14}),
        ("Storage (R26\u2013R29): reopen", {26, 27, 28, 29}),
        ("R12/R13 rules", {12, 13}),
        ("# -- R21: an attempt cut", {21}),
        (f"R2D2, CR12, x.R1, _R2, R12a, {_R}05, {_R}0 and 0xR1F", set()),
        (f"{_R}100 is not a two-digit id", set()),
        (f"a made-up {_R}99", {99}),
    ],
)
def test_citation_parser(text: str, expected: set[int]) -> None:
    assert citations(text) == expected


def test_definition_parser_sees_headings_and_list_items_only() -> None:
    text = "\n".join(
        [
            "### R1 Status transitions",
            "#### R2 What waiting means",
            "- R3 Completion is written once",
            "* **R4** Idempotent start",
            "R5 in the middle of a paragraph is a citation, not a definition",
            "see (R6) and ### R7 not at the start of a line",
        ]
    )
    assert rule_definitions(text) == [1, 2, 3, 4]


def test_an_undocumented_citation_is_caught(tmp_path: Path) -> None:
    """The check fails when a cited rule loses its definition."""
    text = DESIGN.read_text(encoding="utf-8")
    without = re.sub(r"^#{2,6} R12\b.*$", "#### Resume signals", text, count=1, flags=re.M)
    assert without != text
    defined = set(rule_definitions(without))
    assert 12 in citations("resume is durable (R12)") - defined
