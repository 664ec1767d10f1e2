"""The docs quote the code, and cannot drift from it, and their links resolve.

A fenced python block in docs/ that quotes the package starts with a comment naming its file,
``# tinygrad_gpt/ops.py``. Its lines must appear in that file in the same order, consecutive
and at one indentation (the block may be dedented as a whole); a line ``...`` stands for any
number of skipped lines. Blocks without such a first line (usage examples) are not quotes.
The English pages (docs/) and the Spanish edition (docs/es/) are both checked.
"""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = os.path.join(DOCS, "*.md"), os.path.join(DOCS, "es", "*.md")
HEADER = re.compile(r"#\s*(tinygrad_gpt/[\w/]+\.py)\s*$")


def quoted_blocks():
    """(page, line, path, block lines) for every fenced python block that names a file."""
    found = []
    for page in sorted(p for pattern in PAGES for p in glob.glob(pattern)):
        text = open(page, encoding="utf-8").read()
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            lines = m.group(1).rstrip("\n").split("\n")
            header = HEADER.match(lines[0])
            if header:
                line = text[:m.start()].count("\n") + 1
                found.append((os.path.relpath(page, DOCS), line, header.group(1), lines[1:]))
    return found


def heading_anchors(text):
    """The #anchors GitHub gives a page's headings: the text lower-cased, without punctuation
    (accented letters stay), spaces made hyphens; a repeated one gets -1, -2, ..."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    anchors = []
    for title in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", text, re.M):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n, base = 0, slug
        while slug in anchors:
            n += 1
            slug = f"{base}-{n}"
        anchors.append(slug)
    return anchors


def broken_links(folder):
    """'page: target' for every relative link of the pages in ``folder`` that names no file, or
    an #anchor that no heading of the page it points at has."""
    broken = []
    for page in sorted(glob.glob(os.path.join(folder, "*.md"))):
        text = open(page, encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(folder, file)) if file else page
            if not os.path.exists(path):
                broken.append(f"{os.path.basename(page)}: {target}")
            elif anchor and path.endswith(".md") and \
                    anchor not in heading_anchors(open(path, encoding="utf-8").read()):
                broken.append(f"{os.path.basename(page)}: {target} (no such heading)")
    return broken


def test_anchors_are_the_ones_github_makes():
    assert heading_anchors("# A, b\n## The engine: `sum_to` in place\n```\n# x\n```\n## A, b\n## Atención\n") \
        == ["a-b", "the-engine-sum_to-in-place", "a-b-1", "atención"]


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def find_quote(block, source):
    """None if ``block`` (lines, ``...`` for skipped ones) appears in ``source`` (lines) in
    order, else the first block line that could not be matched."""
    block = [line.rstrip() for line in block]
    source = [line.rstrip() for line in source]
    runs, run = [], []  # the block cut at its "..." lines: each run is consecutive in the file
    for line in block:
        if line.strip() == "...":
            runs.append(run)
            run = []
        else:
            run.append(line)
    runs.append(run)
    first = next(line for line in block if line.strip() and line.strip() != "...")
    for start, candidate in enumerate(source):
        if candidate.strip() != first.strip():
            continue
        shift = _indent(candidate) - _indent(first)
        if shift >= 0 and _match_runs(runs, source, " " * shift, start, anchored=bool(runs[0])):
            return None
    return first


def _match_runs(runs, source, pad, at, anchored):
    """The runs found in order from ``at`` (the first one exactly there if ``anchored``), each
    consecutive, every line shifted right by ``pad``."""
    if not runs:
        return True
    want = [pad + line if line else "" for line in runs[0]]
    for i in [at] if anchored else range(at, len(source) - len(want) + 1):
        if source[i:i + len(want)] == want and _match_runs(runs[1:], source, pad, i + len(want), False):
            return True
    return False


def test_a_drifted_quote_is_caught():
    source = ["class A:", "    def f(self, x):", "        y = x + 1", "        z = y * 2", "        return z"]
    assert find_quote(["def f(self, x):", "    y = x + 1", "    z = y * 2"], source) is None
    assert find_quote(["def f(self, x):", "    ...", "    return z"], source) is None
    assert find_quote(["def f(self, x):", "    z = y * 2"], source) == "def f(self, x):"  # a skipped line
    assert find_quote(["def f(self, x):", "    y = x + 2"], source) == "def f(self, x):"  # a changed line
    assert find_quote(["    return z", "...", "    y = x + 1"], source) is not None  # out of order
    assert find_quote(["def g(self, x):"], source) == "def g(self, x):"


BLOCKS = quoted_blocks()


@pytest.mark.parametrize("page,line,path,block", BLOCKS, ids=[f"{b[0]}:{b[1]}" for b in BLOCKS])
def test_every_quoted_block_matches_the_package(page, line, path, block):
    file = os.path.join(ROOT, path)
    assert os.path.isfile(file), f"{page}, line {line}: no file {path}"
    source = open(file, encoding="utf-8").read().split("\n")
    missing = find_quote(block, source)
    assert missing is None, f"{page}, line {line}: the quote of {path} has drifted near {missing.strip()!r}"


@pytest.mark.parametrize("path,must_hold", [
    ("tinygrad_gpt/rules.py", "class Attention(Function):"),
    ("tinygrad_gpt/rules.py", "class LayerNorm(Function):"),
    ("tinygrad_gpt/rules.py", "class CrossEntropy(Function):"),
    ("tinygrad_gpt/rules.py", "class Softmax(Function):"),
    ("tinygrad_gpt/ops.py", "class Gelu(Function):"),
    ("tinygrad_gpt/ops.py", "class GetItem(Function):"),
    ("tinygrad_gpt/tensor.py", "for t in reversed(self._topo()):"),
])
def test_the_docs_quote_the_rules(path, must_hold):
    """The rules a learner reads next to their pages: attention, layer norm, softmax with
    cross-entropy, GELU, the embedding's lookup, and the engine's backward loop."""
    assert any(p == path and any(must_hold in line for line in block) for _, _, p, block in BLOCKS), \
        f"no docs block quotes {must_hold!r} from {path}"
