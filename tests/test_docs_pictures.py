"""The docs' pictures: every one a page shows exists and is a real picture, and none is orphaned.

The diagrams a learner needs are where they belong: how positions connect in a recurrence, a
convolution and attention (page 1), the timeline (1a), one head's pipeline (8), the residual stream
(9), the whole model (9a) and the KV cache (12a); the warmup curves (10a) mark their evaluations.
Each PNG is checked with ``check_png``: a PNG of a sensible size, not one flat colour.
"""
import os
import re

import pytest

from test_viz import check_png

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
IMAGES = os.path.join(DOCS, "images")


def pictures_shown():
    """(page, picture path relative to docs/) for every ![...](...) on every page."""
    found = []
    for page in sorted(os.listdir(DOCS)):
        if page.endswith(".md"):
            text = open(os.path.join(DOCS, page), encoding="utf-8").read()
            found += [(page, target) for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)]
    return found


SHOWN = pictures_shown()


@pytest.mark.parametrize("page,target", SHOWN, ids=[f"{p}:{t}" for p, t in SHOWN])
def test_every_picture_shown_exists_and_is_not_blank(page, target):
    path = os.path.normpath(os.path.join(DOCS, target))
    assert os.path.isfile(path), f"{page} shows {target}, which does not exist"
    check_png(path)


def test_every_picture_in_docs_images_is_shown():
    shown = {os.path.basename(t) for _, t in SHOWN}
    orphans = sorted(f for f in os.listdir(IMAGES) if f.endswith(".png") and f not in shown)
    assert not orphans, orphans


@pytest.mark.parametrize("page,picture", [
    ("01-why-transformers.md", "connectivity.png"),
    ("01a-the-transformer-era.md", "timeline.png"),
    ("08-attention.md", "attention_pipeline.png"),
    ("09-embedding-and-residuals.md", "residual_stream.png"),
    ("09a-the-whole-model.md", "architecture.png"),
    ("12a-tokens-and-sampling.md", "kv_cache.png"),
    ("10a-training-dynamics.md", "warmup.png"),
    ("10a-training-dynamics.md", "warmup_recipe.png"),
])
def test_each_page_shows_its_picture(page, picture):
    assert (page, f"images/{picture}") in SHOWN, f"{page} does not show images/{picture}"


def test_a_blank_picture_is_caught(tmp_path):
    pytest.importorskip("matplotlib").use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(2, 2))
    fig.savefig(tmp_path / "blank.png")
    plt.close(fig)
    with pytest.raises(AssertionError, match="blank"):
        check_png(tmp_path / "blank.png")
