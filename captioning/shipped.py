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


def shipped_model_dir(name: str) -> Path | None:
    """The directory of a shipped model named `name` ("model" or "model_hard"); None for any other name."""
    return SHIPPED_MODELS.get(name)


def is_shipped(directory: str | Path) -> bool:
    """Whether a model directory is one of the shipped Flickr8k models."""
    return Path(directory).resolve() in {path.resolve() for path in SHIPPED_MODELS.values()}
