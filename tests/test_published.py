"""Published numbers shown beside ours are the ones the project checked.

``../shared/anchors/README.md`` lists each published figure with where it was read. Every number in
a docs table that names its source, and every ``reference:`` of a PTB row file, must appear in one
row of that list; a "vs LM" column must be the difference it claims. A typo or an unchecked figure
fails here instead of sitting silently beside our results.
"""

import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TEXTVAE_SHARED", ROOT.parent / "shared"))
ANCHORS = SHARED / "anchors" / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")

pytestmark = pytest.mark.skipif(not ANCHORS.is_file(), reason=f"{ANCHORS} not found (../shared beside the checkout)")


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def numbers(cell: str) -> list[float]:
    """The numbers in a cell: '102.10 / 101.48' gives two, '–' none, prose none."""
    parts = [p.strip() for p in cell.split("/")]
    if not all(NUMBER.match(p) or p in ("", "–", "-") for p in parts):
        return []  # prose, or a name such as timbmg/Sentence-VAE
    return [float(p) for p in parts if NUMBER.match(p)]


def anchor_rows() -> list[set[float]]:
    """Each table row of the anchors list as the set of numbers in its cells."""
    rows = []
    for line in ANCHORS.read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append({x for c in cells(line) for x in numbers(c)})
    return rows


def tables(text: str):
    """(header cells, [(line number, row cells)]) for each markdown table of ``text``."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|-: "):
            header, rows, j = cells(lines[i]), [], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append((j + 1, cells(lines[j])))
                j += 1
            yield header, rows
            i = j
        else:
            i += 1


def published_tables():
    """Docs tables of published figures: those with a 'source' column, and those comparing a paper's
    rows with its own LM (a 'vs LM' column, He et al. 2019's table on docs/ptb.md)."""
    for page in DOCS:
        for header, rows in tables(page.read_text(encoding="utf-8")):
            if "source" in header or "vs LM" in header:
                yield page, header, rows


def test_the_ptb_page_shows_published_tables():
    found = {(p.name, "vs LM" in h) for p, h, _ in published_tables()}
    assert ("ptb.md", False) in found and ("ptb.md", True) in found


@pytest.mark.parametrize("page,header,rows", list(published_tables()),
                         ids=lambda v: v.name if isinstance(v, Path) else "")
def test_every_published_number_is_in_the_anchors_list(page, header, rows):
    anchors = anchor_rows()
    skip = {i for i, h in enumerate(header) if h in ("vs LM", "source", "what differs")}
    for line, row in rows:
        shown = {x for i, c in enumerate(row) if i not in skip for x in numbers(c)}
        assert shown, f"{page.name}:{line}: a published row with no number"
        assert any(shown <= a for a in anchors), (
            f"{page.name}:{line}: {sorted(shown)} is not one row of {ANCHORS}; cite only checked figures")


@pytest.mark.parametrize("page,header,rows", [t for t in published_tables() if "vs LM" in t[1]],
                         ids=lambda v: v.name if isinstance(v, Path) else "")
def test_vs_lm_columns_are_the_differences_they_claim(page, header, rows):
    lm = rows[0][1]
    assert lm[0].startswith("LSTM-LM"), f"{page.name}:{rows[0][0]}: the first row should be the LM"
    for col, h in enumerate(header):
        if h != "vs LM":
            continue
        nll = col - 3  # NLL, KL, MI, vs LM
        assert header[nll].endswith("NLL"), header
        for line, row in rows[1:]:
            want = float(row[nll]) - float(lm[nll])
            assert abs(float(row[col]) - want) < 0.051, f"{page.name}:{line}: {row[col]} is not {want:+.1f}"


def test_row_file_references_are_in_the_anchors_list():
    anchors = anchor_rows()
    seen = 0
    for path in sorted((ROOT / "experiments").glob("*/*.yaml")):
        ref = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("reference")
        if not ref:
            continue
        seen += 1
        shown = {float(ref[k]) for k in ("nll", "kl", "ppl") if ref.get(k) is not None}
        assert shown and any(shown <= a for a in anchors), (
            f"{path.relative_to(ROOT)}: reference {sorted(shown)} is not one row of {ANCHORS}")
        assert ref.get("source") and ref.get("status"), f"{path.relative_to(ROOT)}: a reference needs its source and status"
    assert seen >= 3
