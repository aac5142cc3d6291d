"""Data preparation: captioned images -> HDF5 pixels + fixed-length JSON captions, word map, references, names.

Readers (Karpathy json, CSV, synthetic) turn a source into a CaptionSet; prepare_dataset() turns a CaptionSet
into the files training and evaluation read. Every output is written under a temporary name and renamed only
once all of them are complete, so a crash never leaves files that look finished.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import h5py
import numpy as np
from tqdm import tqdm

from captioning.data import SPLIT_LABELS, SPLITS, PreparedData, split_of
from captioning.preprocess import STORED_IMAGE_SIZE, load_image, resize_square
from captioning.synthetic import SYNTHETIC_IMAGE_SIZE, make_synthetic
from captioning.text import tokenize
from captioning.vocab import build_word_map, encode_caption, save_word_map

SPLIT_KEYS = tuple(split.lower() for split in SPLITS)  # a CaptionSet's split of an image: train | val | test
KARPATHY_DATASETS = ("flickr8k", "flickr30k", "coco")
VOCAB_SPLITS = ("train", "all")  # which splits' words the vocabulary counts; the first is the default
CSV_SPLIT_SEED = 28
# prepare_dataset's defaults, which captioning-prepare's flags read
CAPTIONS_PER_IMAGE, MIN_WORD_FREQ, MAX_CAPTION_WORDS, PREPARE_SEED = 5, 5, 50, 123
TEMP_PREFIX = ".tmp-"
COPY_BLOCK = 256  # images per block when compacting an HDF5 file
CSV_COLUMNS = "image,caption[,split]"
CSV_IMAGE_COLUMNS = ("image", "filename", "file")
CSV_CAPTION_COLUMNS = ("caption", "text")
COLUMN_NAME = re.compile(r"[^\W\d][\w-]*")  # one word, no dot: a header field, never an image file name
MIN_EVAL_IMAGES = 5  # fewer val or test images than this give scores that say little


class DataError(ValueError):
    """Input that cannot be prepared (missing file, malformed json/csv); the CLI reports it in one line."""


@dataclass
class CaptionSet:
    """What a reader found: each image's split (first-appearance order) and every caption in reading order."""

    image_dir: str
    splits: dict[str, str]  # image name (relative to image_dir) -> one of SPLIT_KEYS
    captions: list[tuple[str, list[str]]]  # (image name, tokens), in the order they were read
    boxes: dict[str, list[dict]] | None = None  # image name -> [{"shape", "color", "box"}] (synthetic only)

    @property
    def by_split(self) -> dict[str, dict[str, list[list[str]]]]:
        """Per split, the ordered caption map {image name: [token lists]} of images that have captions."""
        return group_by_split(self.splits, self.captions)


@dataclass
class PrepareSummary:
    """What prepare_dataset() stored, dropped and wrote."""

    base_name: str
    output_dir: str
    images: dict[str, int]  # stored images per split
    captions: dict[str, int]  # stored (encoded) captions per split
    captions_read: int
    captions_kept: int  # distinct usable references (after the three exclusions below)
    too_long: int
    empty: int
    duplicates: int
    vocab_size: int  # word map entries, special tokens included
    images_sampled: int  # images with more captions than captions_per_image (random subset stored)
    images_topped_up: int  # images with fewer (random repeats stored)
    skipped_images: dict[str, str] = field(default_factory=dict)  # image name -> why (missing / unreadable)
    images_without_captions: list[str] = field(default_factory=list)
    empty_splits: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    removed_stale: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # data that prepares but will train or score badly


# ---------------------------------------------------------------------------------------------------------------
# readers


def read_json_file(path) -> dict:
    """Parsed JSON, or a DataError naming the file."""
    if not os.path.isfile(path):
        raise DataError(f"file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e


def split_name(value: str, where: str) -> str:
    """The CaptionSet split (one of SPLIT_KEYS) of a split label, as data.split_of reads it; DataError naming where."""
    try:
        return split_of(value).lower()
    except ValueError as e:
        raise DataError(f"{where}: {e}") from e


def assign_split(splits: dict[str, str], name: str, split: str, where: str) -> None:
    """Record an image's split, refusing an image that is listed under two different splits."""
    if splits.setdefault(name, split) != split:
        raise DataError(f"{where}: image {name!r} is in split {splits[name]!r} and {split!r}")


def read_karpathy(json_path, image_dir, dataset_name: str) -> CaptionSet:
    """Karpathy split file (flickr8k | flickr30k | coco): captions come from 'raw', tokenized with tokenize()."""
    if dataset_name not in KARPATHY_DATASETS:
        raise DataError(f"unknown Karpathy dataset {dataset_name!r} (expected one of {', '.join(KARPATHY_DATASETS)})")
    data = read_json_file(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{json_path}: expected a Karpathy split file with an 'images' list")
    splits, captions = {}, []
    for i, entry in enumerate(data["images"]):
        where = f"{json_path}: images[{i}]"
        try:
            name = os.path.join(entry.get("filepath", ""), entry["filename"])  # filepath: coco only
            assign_split(splits, name, split_name(entry["split"], where), where)
            for sentence in entry["sentences"]:
                text = sentence["raw"] if "raw" in sentence else " ".join(sentence["tokens"])
                captions.append((name, tokenize(text)))
        except (KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{where}: malformed entry ({type(e).__name__}: {e})") from e
    return CaptionSet(image_dir=str(image_dir), splits=splits, captions=captions)


def split_80_10_10(names: list[str], seed: int) -> dict[str, str]:
    """Shuffle names with random.Random(seed), cut at int(0.8 n) and int(0.9 n); returned in the given order."""
    shuffled = list(names)
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    cut_val, cut_test = int(0.8 * n), int(0.9 * n)
    split_by_name = {name: "train" for name in shuffled[:cut_val]}
    split_by_name.update((name, "val") for name in shuffled[cut_val:cut_test])
    split_by_name.update((name, "test") for name in shuffled[cut_test:])
    return {name: split_by_name[name] for name in names}


def header_fields(row: list[str]) -> list[str]:
    """A row's fields, stripped and lower-cased, without trailing empty ones."""
    fields = [f.strip().lower() for f in row]
    while fields and not fields[-1]:
        fields.pop()
    return fields


def is_csv_header(row: list[str]) -> bool:
    """True for the header image,caption[,split] (image may be filename or file, caption may be text)."""
    fields = header_fields(row)
    return (
        len(fields) in (2, 3)
        and fields[0] in CSV_IMAGE_COLUMNS
        and fields[1] in CSV_CAPTION_COLUMNS
        and fields[2:] in ([], ["split"])
    )


def looks_like_header(row: list[str], image_dir) -> bool:
    """Column names, not data: every field one word without a dot, and the first one no file in image_dir."""
    fields = header_fields(row)
    return (
        bool(fields)
        and all(COLUMN_NAME.fullmatch(f) for f in fields)
        and not os.path.isfile(os.path.join(image_dir, row[0].strip()))
    )


def read_csv_rows(csv_path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank row; a UTF-8 byte-order mark is ignored."""
    if not os.path.isfile(csv_path):
        raise DataError(f"file not found: {csv_path}")
    rows = []
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            for row in reader:
                if any(field.strip() for field in row):
                    rows.append((reader.line_num, row))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path} is not a readable UTF-8 CSV file: {e}") from e
    return rows


def has_split_column(header: list[str] | None, rows: list[tuple[int, list[str]]]) -> bool:
    """Header says so, or (no header) every row ends in a split label after image and caption."""
    if header is not None:
        return len(header) >= 3 and header[2].strip().lower() == "split"
    return bool(rows) and all(len(row) >= 3 and row[-1].strip().lower() in SPLIT_LABELS for _, row in rows)


def read_csv_captions(csv_path, image_dir, seed: int = CSV_SPLIT_SEED) -> CaptionSet:
    """Rows image,caption[,split], several per image, after an optional header of those columns; without a split
    column images are cut 80/10/10 by seed. A first row of other column names is a DataError naming the expected
    ones."""
    rows = read_csv_rows(csv_path)
    header = None
    if rows and is_csv_header(rows[0][1]):
        header = rows.pop(0)[1]
    elif rows and looks_like_header(rows[0][1], image_dir):
        line, row = rows[0]
        raise DataError(
            f"{csv_path}:{line}: unrecognised header {','.join(row)!r}: expected the columns "
            f"{CSV_COLUMNS}, or no header row"
        )
    with_split = has_split_column(header, rows)
    splits, captions = {}, []
    for line, row in rows:
        where = f"{csv_path}:{line}"
        name = row[0].strip()
        if not name:
            raise DataError(f"{where}: row has no image name")
        if len(row) < 2:
            raise DataError(
                f"{where}: row has no caption column (expected rows image,caption[,split]; "
                "quote a caption that contains commas)"
            )
        caption_fields = row[1:-1] if with_split else row[1:]  # unquoted commas stay part of the caption
        if with_split:
            if len(row) < 3:
                raise DataError(f"{where}: expected image,caption,split")
            assign_split(splits, name, split_name(row[-1], where), where)
        else:
            splits.setdefault(name, "")
        captions.append((name, tokenize(",".join(caption_fields))))
    if not with_split:
        splits = split_80_10_10(list(splits), seed)
    return CaptionSet(image_dir=str(image_dir), splits=splits, captions=captions)


def read_synthetic(
    num_images: int, image_dir, seed: int = PREPARE_SEED, image_size: int = SYNTHETIC_IMAGE_SIZE
) -> CaptionSet:
    """Generate shape images as PNG files in image_dir (deterministic in seed), split 80/10/10 by seed."""
    os.makedirs(image_dir, exist_ok=True)
    samples = make_synthetic(num_images, image_size=image_size, seed=seed)
    names = [f"synthetic_{i:05d}.png" for i in range(num_images)]
    for name, sample in zip(names, samples):
        sample.image.save(os.path.join(image_dir, name))
    captions = [(name, tokenize(text)) for name, sample in zip(names, samples) for text in sample.captions]
    boxes = {name: sample.objects for name, sample in zip(names, samples)}
    return CaptionSet(image_dir=str(image_dir), splits=split_80_10_10(names, seed), captions=captions, boxes=boxes)


# ---------------------------------------------------------------------------------------------------------------
# captions and vocabulary


def group_by_split(splits: dict[str, str], captions: list[tuple[str, list[str]]]) -> dict[str, dict]:
    """{split: {image name: [token lists]}}, images in first-appearance order, those without captions left out."""
    per_image = {name: [] for name in splits}
    for name, tokens in captions:
        per_image[name].append(tokens)
    by_split = {split: {} for split in SPLIT_KEYS}
    for name, image_captions in per_image.items():
        if image_captions:
            by_split[splits[name]][name] = image_captions
    return by_split


def clean_captions(captions: list[tuple[str, list[str]]], max_len: int) -> tuple[list, Counter]:
    """Drop empty captions, repeats of an image's caption, and captions over max_len words (never truncated)."""
    kept, dropped, seen = [], Counter(), set()
    for name, tokens in captions:
        if not tokens:
            dropped["empty"] += 1
        elif (name, tuple(tokens)) in seen:
            dropped["duplicate"] += 1
        elif len(tokens) > max_len:
            dropped["too_long"] += 1
        else:
            seen.add((name, tuple(tokens)))
            kept.append((name, tokens))
    return kept, dropped


def count_words(captions: list[tuple[str, list[str]]], splits: dict[str, str], vocab_splits: str) -> Counter:
    """Word frequencies in reading order, over train captions only or over all splits ('all')."""
    word_freq = Counter()
    for name, tokens in captions:
        if vocab_splits == "all" or splits[name] == "train":
            word_freq.update(tokens)
    return word_freq


def pick_captions(captions: list[list[str]], k: int, rng: random.Random) -> list[list[str]]:
    """Exactly k captions: a random subset when there are more, all plus random repeats when fewer."""
    if len(captions) > k:
        return rng.sample(captions, k)
    if len(captions) < k:
        return captions + rng.choices(captions, k=k - len(captions))
    return list(captions)


# ---------------------------------------------------------------------------------------------------------------
# output files


def base_name(dataset: str, captions_per_image: int, min_word_freq: int) -> str:
    """Shared suffix of every output file (the tutorial's naming)."""
    return f"{dataset}_{captions_per_image}_cap_per_img_{min_word_freq}_min_word_freq"


def split_file_names(split: str, base: str, with_boxes: bool) -> dict[str, str]:
    """Output file name per kind for one split (PreparedData owns the naming)."""
    layout = PreparedData("", base)
    return {kind: layout.file_name(kind, split) for kind in layout.KINDS if with_boxes or kind != "BOXES"}


def write_json(path, obj) -> None:
    """Deterministic UTF-8 JSON."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def create_images_file(path, count: int, image_size: int, captions_per_image: int) -> h5py.File:
    """Open HDF5 file with an 'images' (count, 3, S, S) uint8 dataset; no timestamps so bytes are reproducible."""
    h5 = h5py.File(path, "w", libver="earliest")
    h5.attrs["captions_per_image"] = captions_per_image
    images = h5.create_dataset("images", (count, 3, image_size, image_size), dtype="uint8", track_times=False)
    images.attrs["captions_per_image"] = captions_per_image
    return h5


def copy_first_images(src_path, dst_path, count: int, captions_per_image: int) -> None:
    """Copy the first count images into a new file of exactly that size, block by block (bounded memory)."""
    with h5py.File(src_path, "r") as src:
        image_size = src["images"].shape[-1]
        with create_images_file(dst_path, count, image_size, captions_per_image) as dst:
            for start in range(0, count, COPY_BLOCK):
                stop = min(start + COPY_BLOCK, count)
                dst["images"][start:stop] = src["images"][start:stop]  # (B, 3, S, S)


def load_pixels(path: str, image_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """resize_square() pixels (3, S, S) of an image file and its original (width, height)."""
    image = load_image(path)
    return resize_square(image, image_size), image.size


def scale_boxes(objects: list[dict], original_size: tuple[int, int], image_size: int) -> list[dict]:
    """Boxes [x0, y0, x1, y1] from original pixel coordinates to the stored square image."""
    sx, sy = image_size / original_size[0], image_size / original_size[1]
    scaled = []
    for obj in objects:
        x0, y0, x1, y1 = obj["box"]
        box = [round(x0 * sx, 2), round(y0 * sy, 2), round(x1 * sx, 2), round(y1 * sy, 2)]
        scaled.append({"shape": obj["shape"], "color": obj["color"], "box": box})
    return scaled


@dataclass
class SplitOptions:
    """Settings the split writers need besides the split's own data."""

    output_dir: str
    base: str
    captions_per_image: int
    max_len: int
    image_size: int
    progress: bool

    def temp_path(self, name: str) -> str:
        """Where an output is written before every output is complete and renamed into place."""
        return os.path.join(self.output_dir, TEMP_PREFIX + name)


@dataclass
class StoredImages:
    """One split's readable images as staged: names (and synthetic boxes) in storage order."""

    names: list[str]
    boxes: list[list[dict]]


def stage_images(
    split: str,
    images: dict[str, list[list[str]]],
    caption_set: CaptionSet,
    opts: SplitOptions,
    summary: PrepareSummary,
    staged: dict[str, str],
) -> StoredImages | None:
    """Store one split's readable images under a temporary name and register the split's files in staged
    {temp: final}; None (nothing registered) if no image is readable. Skipped images go to summary.skipped_images."""
    names = split_file_names(split, opts.base, with_boxes=caption_set.boxes is not None)
    stage_path = opts.temp_path("stage-" + names["IMAGES"])
    stored, boxes = [], []
    try:
        with create_images_file(stage_path, len(images), opts.image_size, opts.captions_per_image) as h5:
            for name in tqdm(images, desc=f"{split:5s}", unit="img", disable=not opts.progress):
                path = os.path.join(caption_set.image_dir, name)
                if not os.path.isfile(path):
                    summary.skipped_images[name] = "missing file"
                    continue
                try:
                    pixels, original_size = load_pixels(path, opts.image_size)  # (3, S, S)
                except Exception as e:  # any undecodable file is skipped, never a crash halfway
                    summary.skipped_images[name] = f"unreadable ({type(e).__name__}: {e})"
                    continue
                h5["images"][len(stored)] = pixels
                stored.append(name)
                if caption_set.boxes is not None:
                    boxes.append(scale_boxes(caption_set.boxes[name], original_size, opts.image_size))
        if not stored:
            return None
        staged.update((opts.temp_path(name), os.path.join(opts.output_dir, name)) for name in names.values())
        if len(stored) == len(images):
            os.replace(stage_path, opts.temp_path(names["IMAGES"]))
        else:
            copy_first_images(stage_path, opts.temp_path(names["IMAGES"]), len(stored), opts.captions_per_image)
    finally:
        if os.path.exists(stage_path):
            os.remove(stage_path)
    return StoredImages(stored, boxes)


def write_captions(
    split: str,
    stored: StoredImages,
    images: dict[str, list[list[str]]],
    word_map: dict[str, int],
    caption_set: CaptionSet,
    opts: SplitOptions,
    rng: random.Random,
    summary: PrepareSummary,
) -> None:
    """One split's CAPTIONS/CAPLENS/REFS/NAMES(/BOXES) under their temporary names: captions_per_image encoded
    captions per stored image (pick_captions with rng), and every reference."""
    encoded, lengths, refs = [], [], []
    for name in stored.names:
        image_captions = images[name]
        summary.images_sampled += int(len(image_captions) > opts.captions_per_image)
        summary.images_topped_up += int(len(image_captions) < opts.captions_per_image)
        for tokens in pick_captions(image_captions, opts.captions_per_image, rng):
            encoded.append(encode_caption(tokens, word_map, opts.max_len))
            lengths.append(len(tokens) + 2)
        refs.append([" ".join(tokens) for tokens in image_captions])
    contents = {"CAPTIONS": encoded, "CAPLENS": lengths, "REFS": refs, "NAMES": stored.names, "BOXES": stored.boxes}
    for kind, name in split_file_names(split, opts.base, with_boxes=caption_set.boxes is not None).items():
        if kind != "IMAGES":
            write_json(opts.temp_path(name), contents[kind])
    summary.images[split] = len(stored.names)
    summary.captions[split] = len(encoded)


def no_images_error(image_dir: str, skipped: dict[str, str]) -> DataError:
    """Why no image was stored, showing the full path of one file looked for: a wrong image directory, or image
    names that are not file names (CSV columns in another order), shows in it."""
    missing = [name for name, why in skipped.items() if why == "missing file"]
    if missing:
        what = (
            f"none of the {len(skipped)} image files named with the captions exists"
            if len(missing) == len(skipped)
            else f"{len(missing)} of the {len(skipped)} image files named with the captions do not exist, the "
            "others are unreadable"
        )
        looked_for = os.path.abspath(os.path.join(image_dir, missing[0]))
        return DataError(
            f"no readable image: {what}; looked for e.g. {looked_for} (is the image directory right, and "
            "is each image name, the first column of a CSV file, a file name in it?)"
        )
    name, why = next(iter(skipped.items()))
    return DataError(
        f"no readable image: all {len(skipped)} image files failed to load, e.g. "
        f"{os.path.abspath(os.path.join(image_dir, name))} [{why}]"
    )


def data_warnings(images: dict[str, int], captions: list[list[str]], word_map: dict[str, int]) -> list[str]:
    """What prepares but trains or scores badly: most stored caption words outside the vocabulary (they become
    <unk>), and a val or test split too small to score on."""
    warnings = []
    words = sum(len(tokens) for tokens in captions)
    unknown = sum(word not in word_map for tokens in captions for word in tokens)
    if 2 * unknown > words:
        warnings.append(
            f"{100 * unknown / words:.0f}% of the caption words ({unknown} of {words}) are not in the "
            f"vocabulary of {len(word_map)} entries and become <unk>: lower --min-word-freq or prepare "
            "more captions"
        )
    for split in SPLIT_KEYS[1:]:  # val, test
        if images.get(split, 0) < MIN_EVAL_IMAGES:
            warnings.append(
                f"{split} has {images.get(split, 0)} images (fewer than {MIN_EVAL_IMAGES}): its scores say little"
            )
    return warnings


def stale_outputs(output_dir: str, split: str, base: str) -> list[str]:
    """Existing files of an earlier run for a split this run does not write (they would look current)."""
    paths = [os.path.join(output_dir, name) for name in split_file_names(split, base, with_boxes=True).values()]
    return [path for path in paths if os.path.isfile(path)]


def check_options(captions_per_image: int, min_word_freq: int, max_len: int, image_size: int, vocab_splits: str):
    """Refuse settings that cannot produce a dataset."""
    if captions_per_image < 1 or max_len < 1 or image_size < 1 or min_word_freq < 0:
        raise ValueError("captions_per_image, max_len and image_size must be >= 1, min_word_freq >= 0")
    if vocab_splits not in VOCAB_SPLITS:
        raise ValueError(f"vocab_splits must be one of {VOCAB_SPLITS}, got {vocab_splits!r}")


def prepare_dataset(
    caption_set: CaptionSet,
    output_dir,
    dataset: str,
    captions_per_image: int = CAPTIONS_PER_IMAGE,
    min_word_freq: int = MIN_WORD_FREQ,
    max_len: int = MAX_CAPTION_WORDS,
    image_size: int = STORED_IMAGE_SIZE,
    vocab_splits: str = VOCAB_SPLITS[0],
    seed: int = PREPARE_SEED,
    progress: bool = True,
) -> PrepareSummary:
    """Write WORDMAP and per split IMAGES/CAPTIONS/CAPLENS/REFS/NAMES(/BOXES) files; same inputs+seed -> same bytes.

    Images are stored first, so the vocabulary counts the captions of stored images only: a missing or unreadable
    image's captions add no words."""
    check_options(captions_per_image, min_word_freq, max_len, image_size, vocab_splits)
    output_dir = str(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    base = base_name(dataset, captions_per_image, min_word_freq)
    kept, dropped = clean_captions(caption_set.captions, max_len)
    by_split = group_by_split(caption_set.splits, kept)
    with_captions = {name for images in by_split.values() for name in images}
    summary = PrepareSummary(
        base_name=base,
        output_dir=output_dir,
        images={},
        captions={},
        captions_read=len(caption_set.captions),
        captions_kept=len(kept),
        too_long=dropped["too_long"],
        empty=dropped["empty"],
        duplicates=dropped["duplicate"],
        vocab_size=0,
        images_sampled=0,
        images_topped_up=0,
        images_without_captions=[name for name in caption_set.splits if name not in with_captions],
    )
    opts = SplitOptions(output_dir, base, captions_per_image, max_len, image_size, progress)
    staged = {}  # temporary path -> final path
    try:
        stored = {}  # split -> its stored images, for the splits with any
        for split in SPLIT_KEYS:
            images = by_split[split] and stage_images(split, by_split[split], caption_set, opts, summary, staged)
            if images:
                stored[split] = images
            else:
                summary.empty_splits.append(split)
        if not kept:
            raise DataError(
                f"no usable caption among the {len(caption_set.captions)} read ({dropped['empty']} empty, "
                f"{dropped['too_long']} over --max-len {max_len}, {dropped['duplicate']} duplicate)"
            )
        if not stored:
            raise no_images_error(caption_set.image_dir, summary.skipped_images)
        stored_names = {name for images in stored.values() for name in images.names}
        stored_captions = [(name, tokens) for name, tokens in kept if name in stored_names]
        word_map = build_word_map(count_words(stored_captions, caption_set.splits, vocab_splits), min_word_freq)
        summary.vocab_size = len(word_map)
        rng = random.Random(seed)
        for split, images in stored.items():
            write_captions(split, images, by_split[split], word_map, caption_set, opts, rng, summary)
        summary.warnings = data_warnings(summary.images, [tokens for _, tokens in stored_captions], word_map)
        word_map_name = PreparedData("", base).word_map_path.name
        staged[opts.temp_path(word_map_name)] = os.path.join(output_dir, word_map_name)
        save_word_map(opts.temp_path(word_map_name), word_map)
        for split in summary.empty_splits:
            summary.removed_stale += stale_outputs(output_dir, split, base)
        for path in summary.removed_stale:
            os.remove(path)
        for temp_path, final_path in staged.items():
            os.replace(temp_path, final_path)
            summary.files.append(final_path)
    finally:
        for temp_path in staged:
            if os.path.exists(temp_path):
                os.remove(temp_path)
    return summary


def format_summary(summary: PrepareSummary, max_names: int = 20) -> str:
    """Human-readable report of a prepare_dataset() run."""

    def name_list(names):
        shown = ", ".join(names[:max_names])
        return shown + (f", ... ({len(names) - max_names} more)" if len(names) > max_names else "")

    lines = [f"output dir: {summary.output_dir}"]
    for split in SPLIT_KEYS:
        if split in summary.images:
            lines.append(f"  {split:5s}: {summary.images[split]} images, {summary.captions[split]} captions")
        else:
            lines.append(f"  {split:5s}: no images (split skipped)")
    lines.append(
        f"captions: {summary.captions_read} read, {summary.captions_kept} kept; excluded "
        f"{summary.too_long} too long, {summary.empty} empty, {summary.duplicates} duplicate"
    )
    lines.append(
        f"images with more captions than needed (sampled): {summary.images_sampled}; "
        f"with fewer (topped up with repeats): {summary.images_topped_up}"
    )
    lines.append(f"vocabulary: {summary.vocab_size} entries (4 special tokens included)")
    if summary.images_without_captions:
        lines.append(
            f"images skipped, no usable caption ({len(summary.images_without_captions)}): "
            f"{name_list(summary.images_without_captions)}"
        )
    skipped = [f"{name} [{why}]" for name, why in summary.skipped_images.items()]
    lines.append(f"images skipped, missing/unreadable ({len(skipped)}): {name_list(skipped) if skipped else 'none'}")
    if summary.removed_stale:
        lines.append(f"removed stale files of skipped splits: {', '.join(summary.removed_stale)}")
    lines.append(f"files written ({len(summary.files)}):")
    lines += [f"  {path}" for path in summary.files]
    lines.append(f"base name: {summary.base_name}")
    lines += [f"warning: {warning}" for warning in summary.warnings]
    return "\n".join(lines)
