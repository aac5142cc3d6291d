"""Loading the models a tool serves, and the one-line messages people see when a model or an upload is unusable."""

from __future__ import annotations

from pathlib import Path

from PIL import UnidentifiedImageError

from captioning.checkpoint import BEST_DIR, CONFIG_FILE, LAST_DIR, WEIGHTS_FILE, CheckpointError
from captioning.model import Captioner, EncoderUnavailable
from captioning.preprocess import ImageTooLargeError
from captioning.shipped import (
    DEFAULT_MODEL,
    PHOTO_SUFFIXES,
    SHIPPED_MODELS,
    example_photos,
    is_shipped,
    photos_in,
    repo_path,
)

LOAD_ERRORS = (CheckpointError, OSError, ImportError, ValueError, EncoderUnavailable)  # a model that cannot load
RUN_CHECKPOINTS = (BEST_DIR, LAST_DIR)  # the model folders a training run directory holds
SUPPORTED_TYPES = "JPEG, PNG, GIF, WebP, BMP or TIFF"  # what load_image(..., UPLOAD_FORMATS) decodes
NO_EXAMPLES = "none"  # the examples choice that leaves the examples shelf out


class ModelLoadError(RuntimeError):
    """A model directory that cannot be served; the message is the one line to print."""


class ExamplesError(RuntimeError):
    """A folder of example photos that cannot be served; the message is the one line to print."""


def model_load_error(path: str | Path, error: Exception) -> str:
    """One line saying why a model directory cannot be loaded, pointing a run directory to its best/ model and a
    missing default model to --model."""
    path = Path(path)
    for checkpoint in RUN_CHECKPOINTS:
        if (path / checkpoint / WEIGHTS_FILE).is_file() or (path / checkpoint / CONFIG_FILE).is_file():
            return (
                f"error: {path} is a training run directory; its {checkpoint} model is {path / checkpoint} "
                f"(use --model {path / checkpoint})"
            )
    hint = (
        " (the default model is assets/model; pass --model DIR to use another)"
        if path.resolve() == DEFAULT_MODEL
        else ""
    )
    return f"error: cannot load the model from {path}: {error}{hint}"


def load_captioner(path: str | Path, fastest_encoder: bool = False) -> tuple[Captioner, str | None]:
    """Captioner.load, or ModelLoadError with model_load_error's line. With fastest_encoder (captioning photos, not
    scoring) the encoder runs in fp32 where the saved bf16 would be emulated; the second value is the note saying so."""
    try:
        captioner = Captioner.load(path)
    except LOAD_ERRORS as error:
        raise ModelLoadError(model_load_error(path, error)) from error
    return captioner, captioner.use_fastest_encoder() if fastest_encoder else None


def model_names(directories: list[Path]) -> list[str]:
    """Page names of served model directories: each folder's name, or its whole path where names repeat."""
    names = [Path(d).name or str(d) for d in directories]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, directories)]


def load_models(directories: list[Path]) -> tuple[dict[str, Captioner], list[str]]:
    """The models to serve by page name (the first is the default), for captioning photos, and the notes to print
    once (precision notes shared by several models are given once)."""
    models, notes = {}, []
    for name, directory in zip(model_names(directories), directories):
        models[name], note = load_captioner(directory, fastest_encoder=True)
        if note and note not in notes:
            notes.append(note)
    return models, notes


def default_model_dirs() -> tuple[list[Path], str | None]:
    """The shipped models to serve when none is named, and a note when the hard-attention one is not there."""
    soft, hard = SHIPPED_MODELS["model"], SHIPPED_MODELS["model_hard"]
    if hard.is_dir():
        return [soft, hard], None
    note = f"note: {repo_path(hard)} (the hard-attention model) is not there: serving {repo_path(soft)} only"
    return [soft], note


def serves_shipped_models_only(directories: list[Path]) -> bool:
    """Whether every served model is a shipped Flickr8k model (what the page's notes about Flickr8k speak of)."""
    return bool(directories) and all(is_shipped(d) for d in directories)


def served_examples(choice: str | None, directories: list[Path]) -> list[str]:
    """The example photos a demo serving the model `directories` offers: none for NO_EXAMPLES, the photos in the
    folder `choice` (photos_in: sorted by name), and by default the shipped examples while only the shipped models
    are served (they are Flickr8k scenes), else none. ExamplesError for a missing folder or one without photos."""
    if choice is None:
        return example_photos() if serves_shipped_models_only(directories) else []
    if choice.strip().lower() == NO_EXAMPLES:
        return []
    folder = Path(choice)
    if not folder.is_dir():
        raise ExamplesError(f"error: no folder of example photos at {folder} (or '{NO_EXAMPLES}' for no examples)")
    photos = photos_in(folder)
    if not photos:
        kinds = ", ".join(suffix.lstrip(".") for suffix in PHOTO_SUFFIXES)
        raise ExamplesError(f"error: the examples folder {folder} holds no photo ({kinds})")
    return photos


def image_error_message(error: BaseException) -> str:
    """Why an upload could not be read, in one sentence for the page (never a stack trace)."""
    if isinstance(error, ImageTooLargeError):
        size = f"is {error.width}x{error.height} pixels" if error.width else "has far too many pixels"
        return (
            f"Could not read this image: it {size}, over the {error.limit / 1e6:g}-megapixel limit. "
            "Please upload a smaller image."
        )
    if isinstance(error, UnidentifiedImageError):
        return f"Could not read this image: the file is not a {SUPPORTED_TYPES} image. Please upload a photo."
    if isinstance(error, MemoryError):
        return "Could not read this image: the server has too little free memory for it. Please try a smaller one."
    return "Could not read this image: the file looks damaged or incomplete. Please try another JPEG or PNG."
