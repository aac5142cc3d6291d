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
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # what a folder of example photos may hold (any case)


def repo_path(path: Path) -> str:
    """A shipped file's path as help texts and notes name it: from the repository root, e.g. assets/model (a path
    elsewhere as it is)."""
    root = ASSETS_DIR.parent
    return path.relative_to(root).as_posix() if Path(path).is_relative_to(root) else str(path)


def shipped_model_dir(name: str) -> Path | None:
    """The directory of a shipped model named `name` ("model" or "model_hard"); None for any other name."""
    return SHIPPED_MODELS.get(name)


def is_shipped(directory: str | Path) -> bool:
    """Whether a model directory is one of the shipped Flickr8k models."""
    return Path(directory).resolve() in {path.resolve() for path in SHIPPED_MODELS.values()}


def photos_in(directory: Path) -> list[str]:
    """The photos (PHOTO_SUFFIXES) in a folder, sorted by name; sub-folders are not searched."""
    return [str(p) for p in sorted(directory.iterdir()) if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES]


def example_photos(directory: Path = EXAMPLES_DIR) -> list[str]:
    """The shipped example photos: those named in EXAMPLE_ORDER first, in that order, then the others by name."""

    def rank(path: str) -> int:
        stem = Path(path).stem
        return EXAMPLE_ORDER.index(stem) if stem in EXAMPLE_ORDER else len(EXAMPLE_ORDER)

    return sorted(photos_in(directory), key=rank)  # a stable sort: photos_in's name order among equals
