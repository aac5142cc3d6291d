"""Where the shipped files live: the two Flickr8k models, the example photos and the page's web assets.

One owner for these paths, so the library, the command line and the demo find them from any working directory.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_MODELS = {"model": ASSETS_DIR / "model", "model_hard": ASSETS_DIR / "model_hard"}  # soft, hard attention
DEFAULT_MODEL = SHIPPED_MODELS["model"]  # what every tool uses when no model is named
EXAMPLES_DIR = ASSETS_DIR / "examples"
WEB_DIR = ASSETS_DIR / "web"  # the page's HTML, style sheet and script
# The page's example order: in-domain scenes first (the first one is on the page at start-up), the cat last.
EXAMPLE_ORDER = ("dogs", "meadow", "cameraman", "grace_hopper", "stream", "astronaut", "cat")
OUT_OF_DOMAIN_EXAMPLE = "cat"  # kept on purpose from outside Flickr8k (assets/web/examples_note.md explains)


def shipped_model_dir(name: str) -> Path | None:
    """The directory of a shipped model named `name` ("model" or "model_hard"); None for any other name."""
    return SHIPPED_MODELS.get(name)


def is_shipped(directory: str | Path) -> bool:
    """Whether a model directory is one of the shipped Flickr8k models."""
    return Path(directory).resolve() in {path.resolve() for path in SHIPPED_MODELS.values()}


def example_photos(directory: Path = EXAMPLES_DIR) -> list[str]:
    """The example photos: EXAMPLE_ORDER first (those that exist), then any other JPEG in the folder by name."""
    found = {p.stem: p for p in directory.glob("*.jpg")}
    ordered = [found.pop(stem) for stem in EXAMPLE_ORDER if stem in found]
    return [str(p) for p in ordered + sorted(found.values())]
