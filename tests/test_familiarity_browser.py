"""The familiarity line in a real browser: shown in #familiarity above the caption only for a photo whose
familiarity is below the threshold, and never for a model without a summary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import open_demo_page
from test_browser import caption_photo

from captioning.cli import app
from captioning.familiarity import UNFAMILIAR_BELOW, UNFAMILIAR_NOTE, Familiarity, neighbour_distance, pooled
from captioning.model import Captioner

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
FAMILIAR, STRANGE = EXAMPLES / "dogs.jpg", EXAMPLES / "cat.jpg"
NOTE_JS = "() => { const n = document.querySelector('#familiarity .sat-familiarity'); return n && !n.hidden; }"


def with_summary(model_dir: Path, strange_percent: float) -> Captioner:
    """The tiny model with a summary whose only training photo is FAMILIAR and whose 20 val distances put STRANGE
    at `strange_percent` (the share of val photos farther than it)."""
    captioner = Captioner.load(model_dir)
    reference = pooled(captioner.encode(captioner.image_batch(str(FAMILIAR)))).half().float()  # (1, C) as stored
    strange = float(neighbour_distance(pooled(captioner.encode(captioner.image_batch(str(STRANGE)))), reference)[0])
    farther = round(20 * strange_percent / 100)
    val = torch.tensor([0.5 * strange] * (20 - farther) + [2.0 * strange] * farther)  # (20,) ascending
    captioner.familiarity = Familiarity(reference, val)
    assert captioner.familiarity.percent(captioner.encode(captioner.image_batch(str(STRANGE)))) == [strange_percent]
    return captioner


@pytest.fixture(scope="module")
def page(tiny_model_dir, serve_demo, chromium):
    models = {
        "at_threshold": with_summary(tiny_model_dir, UNFAMILIAR_BELOW),  # STRANGE at 5: not below, no line
        "below": with_summary(tiny_model_dir, 0.0),  # STRANGE farther than every val photo
        "plain": Captioner.load(tiny_model_dir),  # no summary
    }
    with serve_demo(app.build_demo(models, examples=[])) as url, open_demo_page(chromium, url) as page:
        yield page


def note_shown(page) -> bool:
    return page.evaluate(NOTE_JS)


def test_line_only_below_the_threshold_and_only_with_a_summary(page):
    caption_photo(page, STRANGE, "below")
    assert note_shown(page)
    note = page.locator("#familiarity .sat-familiarity")
    assert note.inner_text().strip() == UNFAMILIAR_NOTE
    assert note.bounding_box()["y"] < page.locator("#caption-text").bounding_box()["y"]  # above the caption
    caption_photo(page, FAMILIAR, "below")  # its own training photo: 100
    assert not note_shown(page)
    caption_photo(page, STRANGE, "at_threshold")
    assert not note_shown(page)
    caption_photo(page, STRANGE, "plain")
    assert not note_shown(page)
    assert page.locator("#familiarity").bounding_box() is None  # no empty block above the caption
    caption_photo(page, STRANGE, "below")
    assert note_shown(page)
