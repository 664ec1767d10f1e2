"""The Spanish edition (docs/es/) keeps step with the English pages (docs/).

Every English page has a Spanish page of the same name, and the two share what must not be
translated: the fenced code blocks (verbatim and in order), the inline code (the same set of
names, commands and tests), the worked numbers, the pictures (referenced from docs/images/,
never copied) and the targets of their links.
Every relative link of the Spanish pages resolves, its #anchor included.

A worked number is a numeric literal outside code blocks and link targets (in prose, inline
code and math alike: most of a worked example's numbers sit in $...$) that has a decimal point
(``1.8994``), an exponent (``1e-8``), a K/M/B suffix (``124.4M``) or at least three digits
(``2017``, ``124,439,808``); shorter integers are page and section numbers, counts and indices
that a translation may word differently. Both editions write decimals with a point, as the code
does; digit groups may be separated by commas (English) or by a narrow no-break space (Spanish),
and compare equal either way.
"""
import collections
import glob
import os
import re

import pytest

from test_docs import ROOT, DOCS, broken_links

ES = os.path.join(DOCS, "es")
ENGLISH = sorted(os.path.basename(p) for p in glob.glob(os.path.join(DOCS, "*.md")))

FENCE = re.compile(r"^(`{3,}|~{3,})([^\n]*)\n(.*?)^\1[ \t]*$", re.S | re.M)
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:[,\u202f\u00a0]\d{3})+|\d+)(\.\d+)?"
                    r"([eE][-+\u2212]?\d+)?([KMB](?![A-Za-z]))?(?!\d)")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)|<img\s[^>]*src=\"([^\"]+)\"")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def spanish(name):
    """The text of docs/es/<name>; fails, naming the page, if it has not been written."""
    path = os.path.join(ES, name)
    assert os.path.isfile(path), f"docs/{name} has no Spanish edition docs/es/{name}"
    return read(path)


def fences(text):
    """Every fenced block as (info string, body), in order."""
    return [(m.group(2).strip(), m.group(3)) for m in FENCE.finditer(text)]


def worked_numbers(text):
    """The multiset of worked numbers (see the module docstring) of a page, normalised."""
    text = LINK.sub("]", FENCE.sub("", text))  # no code blocks, no link targets
    found = collections.Counter()
    for m in NUMBER.finditer(text):
        whole, decimals, exponent, suffix = m.groups()
        digits = re.sub(r"\D", "", whole)
        if decimals or exponent or suffix or len(digits) >= 3:
            exponent = (exponent or "").replace("\u2212", "-").replace("+", "")
            found[digits + (decimals or "") + exponent + (suffix or "")] += 1
    return found


def inline_code(text):
    return set(re.findall(r"`([^`\n]+)`", FENCE.sub("", text)))


def images(text):
    return [a or b for a, b in IMAGE.findall(text)]


def link_targets(text, folder):
    """The files a page's relative links point at (anchors dropped), as paths from the repo root,
    with a page of docs/es/ written as its English twin so that the editions compare."""
    found = set()
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = os.path.relpath(os.path.normpath(os.path.join(folder, target.split("#")[0])), ROOT)
        found.add(re.sub(r"^docs/es/", "docs/", path))
    return found


def test_every_page_has_a_spanish_edition_and_no_other():
    spanish_pages = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ES, "*.md")))
    assert "README.md" in ENGLISH and len(ENGLISH) > 5
    missing = sorted(set(ENGLISH) - set(spanish_pages))
    extra = sorted(set(spanish_pages) - set(ENGLISH))
    assert not missing, f"pages with no Spanish edition in docs/es/: {missing}"
    assert not extra, f"Spanish pages with no English page in docs/: {extra}"


@pytest.mark.parametrize("name", ENGLISH)
def test_the_code_blocks_are_the_same_and_in_order(name):
    english, es = fences(read(os.path.join(DOCS, name))), fences(spanish(name))
    assert len(es) == len(english), f"docs/es/{name}: {len(es)} code blocks, docs/{name}: {len(english)}"
    for i, (a, b) in enumerate(zip(english, es)):
        assert a == b, f"docs/es/{name}: code block {i + 1} differs from docs/{name}:\n{b[1]}\n---\n{a[1]}"


@pytest.mark.parametrize("name", ENGLISH)
def test_the_inline_code_is_the_same(name):
    """Names of functions, tests, flags and commands are never translated (nor mistyped)."""
    english, es = inline_code(read(os.path.join(DOCS, name))), inline_code(spanish(name))
    assert es == english, (f"docs/es/{name}: inline code only in the English page {sorted(english - es)}, "
                           f"only in the Spanish page {sorted(es - english)}")


@pytest.mark.parametrize("name", ENGLISH)
def test_the_worked_numbers_are_the_same(name):
    english, es = worked_numbers(read(os.path.join(DOCS, name))), worked_numbers(spanish(name))
    assert english == es, (f"docs/es/{name}: numbers only in the English page "
                           f"{sorted((english - es).elements())}, only in the Spanish page "
                           f"{sorted((es - english).elements())}")


@pytest.mark.parametrize("name", ENGLISH)
def test_the_pictures_are_shared(name):
    english, es = images(read(os.path.join(DOCS, name))), images(spanish(name))
    assert {os.path.basename(p) for p in es} == {os.path.basename(p) for p in english}, \
        f"docs/es/{name} shows {es}, docs/{name} shows {english}"
    for target in es:
        path = os.path.normpath(os.path.join(ES, target))
        assert os.path.dirname(path) == os.path.join(DOCS, "images") and os.path.isfile(path), \
            f"docs/es/{name}: {target} is not a picture in docs/images/"


def test_nothing_but_pages_in_docs_es():
    others = [os.path.relpath(os.path.join(d, f), ES) for d, _, files in os.walk(ES)
              for f in files if not f.endswith(".md")]
    assert os.path.isdir(ES) and not others, f"docs/es/ holds more than pages (pictures are shared): {others}"


@pytest.mark.parametrize("name", ENGLISH)
def test_the_links_point_at_the_same_files(name):
    english = link_targets(read(os.path.join(DOCS, name)), DOCS)
    es = link_targets(spanish(name), ES)
    assert es == english, (f"docs/es/{name} links only to {sorted(es - english)}; "
                           f"docs/{name} only to {sorted(english - es)}")


def test_every_link_of_the_spanish_edition_resolves():
    assert not broken_links(ES), broken_links(ES)


def test_the_readme_links_the_spanish_edition():
    assert "](docs/es/README.md)" in read(os.path.join(ROOT, "README.md"))


def test_the_checks_can_fail():
    page = "Sea $x = 2.5$ y `lr=3e-4`; 124,439,808 pasos, 1.8994 [pág. 6](06-a.md) ![a](../images/loss.png)\n"
    assert worked_numbers(page) == {"2.5": 1, "3e-4": 1, "124439808": 1, "1.8994": 1}
    assert worked_numbers("124\u202f439\u202f808 y 1.8994 en 2017, 12 y 3") == \
        {"124439808": 1, "1.8994": 1, "2017": 1}
    assert worked_numbers("1,8994") != worked_numbers("1.8994")  # a decimal comma is caught
    assert worked_numbers("```python\nx = 1.25\n```\n") == {}
    assert images(page) == ["../images/loss.png"]
    assert link_targets(page, ES) == {"docs/06-a.md", "docs/images/loss.png"}
    assert fences("```python\nx = 1\n```\ntexto\n```\n$ ls\n```\n") == [("python", "x = 1\n"), ("", "$ ls\n")]
    assert inline_code(page + "```\n`x`\n```\n") == {"lr=3e-4"}
