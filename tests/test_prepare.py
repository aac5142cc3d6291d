"""Data preparation: readers, vocabulary, caption sampling, HDF5/JSON outputs (boxes scaled to the stored size), bad
inputs, determinism, CLI."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import prepare
from PIL import Image

from captioning.data import PreparedData
from captioning.prepare import (
    DataError,
    format_summary,
    prepare_dataset,
    read_csv_captions,
    read_karpathy,
    read_synthetic,
)
from captioning.text import tokenize
from captioning.vocab import decode, encode_caption, invert_word_map, load_word_map

REPO = Path(__file__).resolve().parents[1]


def make_image(path: Path, color, size: int = 8) -> None:
    """Tiny single-colour image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def load_outputs(out: Path, split: str, base: str) -> dict:
    """Every JSON output of a split plus the HDF5 images array."""
    outputs = {
        kind: json.loads((out / f"{split}_{kind}_{base}.json").read_text(encoding="utf-8"))
        for kind in ("CAPTIONS", "CAPLENS", "REFS", "NAMES")
    }
    with h5py.File(PreparedData(out, base).images_path(split), "r") as h5:
        outputs["IMAGES"] = h5["images"][:]  # (N, 3, S, S)
        outputs["cpi"] = int(h5.attrs["captions_per_image"])
    return outputs


# --------------------------------------------------------------------------------------------------------------
# the original design's worked example, through the CSV reader with a split column

COLORS = {"img1": (255, 0, 0), "img2": (0, 255, 0), "img3": (0, 0, 255), "img4": (255, 255, 0)}


def test_worked_example_through_csv_with_split_column(tmp_path):
    """Four images, captions_per_image=2, min_word_freq=1, max_len=2, vocab_splits='all'.

    Row order. Words are numbered in the order captions are read and images are stored in the order they first
    appear, so both orders come from the CSV rows. The expected map a=1, cat=2, dog=3, bird=4 needs the first
    caption read to be "A cat." (img1): every other caption holding a kept word either starts with cat/dog/bird
    or is "A dog."/"A bird." (dog or bird before cat), and "A fish." (img4) would put img4 first in train. So
    img1 is read first and train cannot be stored as img3, img1, img4: the rows run img1, img2, img3, img4 (the
    split column says train for img1, img3, img4 and test for img2), and train rows are img1, img3, img4.
    """
    images = tmp_path / "images"
    for name, color in COLORS.items():
        make_image(images / f"{name}.png", color)
    csv_path = write_csv(
        tmp_path / "captions.csv",
        [
            "image,caption,split",
            "img1.png,A cat.,train",
            "img1.png,Black cat.,train",
            "img1.png,Cat on mat.,train",
            "img2.png,A dog.,test",
            "img2.png,Brown dog.,test",
            "img3.png,A bird.,train",
            "img3.png,Blue bird.,train",
            "img3.png,Bird flies.,train",
            "img4.png,A fish.,train",
        ],
    )
    caption_set = read_csv_captions(csv_path, images)
    assert list(caption_set.by_split["train"]) == ["img1.png", "img3.png", "img4.png"]
    assert list(caption_set.by_split["test"]) == ["img2.png"]

    out = tmp_path / "out"
    summary = prepare(caption_set, out, "toy", captions_per_image=2, min_word_freq=1, max_len=2, vocab_splits="all")
    base = "toy_2_cap_per_img_1_min_word_freq"
    assert summary.base_name == base

    word_map = PreparedData(out, base).load_word_map()
    expected = {"<pad>": 0, "a": 1, "cat": 2, "dog": 3, "bird": 4, "<start>": 5, "<end>": 6, "<unk>": 7}
    assert list(word_map.items()) == list(expected.items())
    assert encode_caption(tokenize("A bird."), word_map, 2) == [5, 1, 4, 6]
    assert encode_caption(tokenize("Bird flies."), word_map, 2) == [5, 4, 7, 6]

    train = load_outputs(out, "TRAIN", base)
    assert train["IMAGES"].shape == (3, 3, 256, 256)
    assert train["IMAGES"].dtype == np.uint8 and train["cpi"] == 2
    stored_colors = [tuple(int(v) for v in train["IMAGES"][i, :, 128, 128]) for i in range(3)]
    assert stored_colors == [COLORS["img1"], COLORS["img3"], COLORS["img4"]]
    assert train["NAMES"] == ["img1.png", "img3.png", "img4.png"]
    captions = train["CAPTIONS"]
    assert len(captions) == 6 and all(len(c) == 4 for c in captions)
    assert captions[0:2] == [[5, 1, 2, 6], [5, 7, 2, 6]]  # "a cat", "black cat" ("cat on mat" excluded)
    bird_captions = [[5, 1, 4, 6], [5, 7, 4, 6], [5, 4, 7, 6]]  # a bird, blue bird, bird flies
    assert captions[2] in bird_captions and captions[3] in bird_captions and captions[2] != captions[3]
    assert captions[4:6] == [[5, 1, 7, 6], [5, 1, 7, 6]]  # img4's only caption "a fish", duplicated
    assert train["CAPLENS"] == [4] * 6
    assert train["REFS"] == [["a cat", "black cat"], ["a bird", "blue bird", "bird flies"], ["a fish"]]

    test = load_outputs(out, "TEST", base)
    assert test["CAPTIONS"] == [[5, 1, 3, 6], [5, 7, 3, 6]]  # "a dog", "brown dog"
    assert test["NAMES"] == ["img2.png"]

    assert summary.too_long == 1 and summary.captions_kept == 8
    assert summary.images == {"train": 3, "test": 1} and summary.captions == {"train": 6, "test": 2}
    assert summary.empty_splits == ["val"] and not PreparedData(out, base).images_path("val").exists()
    assert summary.images_topped_up == 1 and summary.images_sampled == 1
    report = format_summary(summary)
    assert "1 too long" in report and "val  : no images" in report and base in report


# --------------------------------------------------------------------------------------------------------------
# readers


def karpathy_entry(filename: str, split: str, raws: list[str], filepath: str | None = None) -> dict:
    entry = {"filename": filename, "split": split, "sentences": [{"raw": raw, "tokens": tokenize(raw)} for raw in raws]}
    if filepath is not None:
        entry["filepath"] = filepath
    return entry


def test_karpathy_splits_with_restval_as_train(tmp_path):
    images = tmp_path / "images"
    entries = [
        karpathy_entry("a.jpg", "train", ["A dog runs.", "A dog."]),
        karpathy_entry("b.jpg", "restval", ["A dog sits."]),
        karpathy_entry("c.jpg", "val", ["A cat."]),
        karpathy_entry("d.jpg", "test", ["A bird."]),
    ]
    for i, entry in enumerate(entries):
        make_image(images / entry["filename"], (40 * i, 0, 0))
    json_path = tmp_path / "dataset.json"
    json_path.write_text(json.dumps({"images": entries, "dataset": "flickr8k"}))

    caption_set = read_karpathy(json_path, images, "flickr8k")
    summary = prepare(caption_set, tmp_path / "out", "flickr8k", captions_per_image=2, min_word_freq=0, image_size=16)
    base = "flickr8k_2_cap_per_img_0_min_word_freq"
    assert summary.images == {"train": 2, "val": 1, "test": 1}
    names = {split: load_outputs(tmp_path / "out", split, base)["NAMES"] for split in ("TRAIN", "VAL", "TEST")}
    assert names == {"TRAIN": ["a.jpg", "b.jpg"], "VAL": ["c.jpg"], "TEST": ["d.jpg"]}
    train = load_outputs(tmp_path / "out", "TRAIN", base)
    assert train["IMAGES"].shape == (2, 3, 16, 16) and len(train["CAPTIONS"]) == 4
    assert train["REFS"] == [["a dog runs", "a dog"], ["a dog sits"]]
    word_map = PreparedData(tmp_path / "out", base).load_word_map()
    assert list(word_map)[:5] == ["<pad>", "a", "dog", "runs", "sits"]  # train (incl. restval) words only


def test_karpathy_coco_filepath(tmp_path):
    images = tmp_path / "coco"
    make_image(images / "val2014" / "x.jpg", (9, 9, 9))
    json_path = tmp_path / "coco.json"
    json_path.write_text(json.dumps({"images": [karpathy_entry("x.jpg", "train", ["A man."], filepath="val2014")]}))
    caption_set = read_karpathy(json_path, images, "coco")
    assert caption_set.by_split["train"] == {os.path.join("val2014", "x.jpg"): [["a", "man"]]}
    with pytest.raises(DataError):
        read_karpathy(tmp_path / "missing.json", images, "coco")


def test_csv_without_split_column_cuts_80_10_10_with_seed_28(tmp_path):
    names = [f"p{i:02d}.png" for i in range(20)]
    rows = [f"{name},picture number {i}" for i, name in enumerate(names)] + [f"{names[0]},another picture"]
    csv_path = write_csv(tmp_path / "c.csv", rows)  # no header, no split column
    first = read_csv_captions(csv_path, tmp_path)
    second = read_csv_captions(csv_path, tmp_path)
    assert first.splits == second.splits
    counts = Counter(first.splits.values())
    assert counts == {"train": 16, "val": 2, "test": 2}
    shuffled = list(names)
    random.Random(28).shuffle(shuffled)
    assert set(first.by_split["train"]) == set(shuffled[:16])
    assert set(first.by_split["val"]) == set(shuffled[16:18]) and set(first.by_split["test"]) == set(shuffled[18:])
    assert list(first.by_split["train"]) == [n for n in names if n in set(shuffled[:16])]  # reading order kept
    assert first.by_split[first.splits[names[0]]][names[0]] == [["picture", "number", "0"], ["another", "picture"]]
    with_header = read_csv_captions(write_csv(tmp_path / "h.csv", ["image,caption"] + rows), tmp_path)
    assert with_header.splits == first.splits


@pytest.mark.parametrize("header", ["image,captions", "caption,image", "image,caption,fold", "filename,text,split,x"])
def test_csv_with_an_unrecognised_header_names_the_expected_columns(tmp_path, header):
    csv_path = write_csv(tmp_path / "c.csv", [header, "a.png,a cat,train"])
    with pytest.raises(
        DataError,
        match=f"c.csv:1: unrecognised header '{header}': expected the columns "
        "image,caption\\[,split\\], or no header row",
    ):
        read_csv_captions(csv_path, tmp_path)


def test_headerless_csv_whose_first_image_has_no_extension(tmp_path):
    """A first row of plain words is data when its first field is an image file, so only real headers are refused."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "cat", format="PNG")
    caption_set = read_csv_captions(write_csv(tmp_path / "c.csv", ["cat,kitten", "dog.png,a dog"]), tmp_path / "images")
    assert caption_set.captions == [("cat", ["kitten"]), ("dog.png", ["a", "dog"])]


def test_vocabulary_from_train_only_by_default(tmp_path):
    images = tmp_path / "images"
    for name in ("t.png", "v.png"):
        make_image(images / name, (1, 2, 3))
    csv_path = write_csv(tmp_path / "c.csv", ["t.png,a cat,train", "v.png,a zebra,val"])
    base = "toy_1_cap_per_img_0_min_word_freq"
    options = dict(captions_per_image=1, min_word_freq=0, image_size=8)

    prepare(read_csv_captions(csv_path, images), tmp_path / "train_only", "toy", **options)
    word_map = PreparedData(tmp_path / "train_only", base).load_word_map()
    assert "zebra" not in word_map
    val = load_outputs(tmp_path / "train_only", "VAL", base)
    assert decode(val["CAPTIONS"][0], invert_word_map(word_map)) == ["a", "<unk>"]
    assert val["REFS"] == [["a zebra"]]  # references keep the real words

    prepare(read_csv_captions(csv_path, images), tmp_path / "all", "toy", vocab_splits="all", **options)
    word_map = PreparedData(tmp_path / "all", base).load_word_map()
    assert list(word_map)[1:4] == ["a", "cat", "zebra"]


def test_pipeline_writes_boxes_scaled_to_stored_size(tmp_path):
    caption_set = read_synthetic(20, tmp_path / "synthetic_images", seed=5, image_size=128)
    summary = prepare_dataset(
        caption_set, tmp_path / "out", "synthetic", captions_per_image=3, min_word_freq=0, image_size=64, progress=False
    )
    base = summary.base_name
    for split in ("TRAIN", "VAL", "TEST"):
        names = json.loads((tmp_path / "out" / f"{split}_NAMES_{base}.json").read_text())
        boxes = json.loads((tmp_path / "out" / f"{split}_BOXES_{base}.json").read_text())
        assert len(boxes) == len(names) > 0
        for name, objects in zip(names, boxes):
            original = caption_set.boxes[name]
            assert [o["shape"] for o in objects] == [o["shape"] for o in original]
            assert [o["box"] for o in objects] == [[v / 2 for v in o["box"]] for o in original]  # 128 -> 64


# --------------------------------------------------------------------------------------------------------------
# caption selection, bad inputs, determinism


def test_long_empty_duplicate_captions_and_sampling(tmp_path):
    images = tmp_path / "images"
    for name in ("many.png", "one.png", "long.png"):
        make_image(images / name, (5, 5, 5))
    many = [f"many.png,caption number {i},train" for i in range(7)]
    csv_path = write_csv(
        tmp_path / "c.csv",
        many
        + [
            "many.png,caption number 0,train",  # duplicate row
            "many.png,   ,train",  # empty caption
            "many.png,this caption has far too many words,train",  # 7 words > max_len=4
            "one.png,un café noir,train",
            "long.png,also a caption that is too long,train",  # its only caption -> image skipped
        ],
    )
    caption_set = read_csv_captions(csv_path, images)
    summary = prepare(
        caption_set, tmp_path / "out", "toy", captions_per_image=3, min_word_freq=0, max_len=4, image_size=8
    )
    assert (summary.too_long, summary.empty, summary.duplicates) == (2, 1, 1)
    assert summary.images_without_captions == ["long.png"]
    assert summary.images_sampled == 1 and summary.images_topped_up == 1
    train = load_outputs(tmp_path / "out", "TRAIN", "toy_3_cap_per_img_0_min_word_freq")
    assert train["NAMES"] == ["many.png", "one.png"] and train["IMAGES"].shape == (2, 3, 8, 8)
    word_map = load_word_map(tmp_path / "out" / "WORDMAP_toy_3_cap_per_img_0_min_word_freq.json")
    inverse = invert_word_map(word_map)
    sampled = [" ".join(decode(c, inverse)) for c in train["CAPTIONS"][:3]]
    assert len(set(sampled)) == 3 and set(sampled) <= {f"caption number {i}" for i in range(7)}
    assert [" ".join(decode(c, inverse)) for c in train["CAPTIONS"][3:]] == ["un café noir"] * 3
    assert train["REFS"] == [[f"caption number {i}" for i in range(7)], ["un café noir"]]
    assert train["CAPLENS"] == [5, 5, 5, 5, 5, 5] and all(len(c) == 6 for c in train["CAPTIONS"])
    report = format_summary(summary)
    assert "2 too long, 1 empty, 1 duplicate" in report and "long.png" in report


def test_missing_and_corrupt_images_are_skipped(tmp_path):
    images = tmp_path / "images"
    make_image(images / "good1.png", (10, 20, 30))
    make_image(images / "good2.png", (30, 20, 10))
    (images / "corrupt.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    csv_path = write_csv(
        tmp_path / "c.csv",
        ["good1.png,a b,train", "missing.jpg,a b,train", "corrupt.jpg,a b,train", "good2.png,a b,train"],
    )
    out = tmp_path / "out"
    summary = prepare(
        read_csv_captions(csv_path, images), out, "toy", captions_per_image=1, min_word_freq=0, image_size=8
    )
    assert set(summary.skipped_images) == {"missing.jpg", "corrupt.jpg"}
    assert summary.skipped_images["missing.jpg"] == "missing file"
    assert summary.skipped_images["corrupt.jpg"].startswith("unreadable")
    train = load_outputs(out, "TRAIN", "toy_1_cap_per_img_0_min_word_freq")
    assert train["NAMES"] == ["good1.png", "good2.png"] and len(train["CAPTIONS"]) == 2
    assert train["IMAGES"].shape == (2, 3, 8, 8)
    assert train["IMAGES"][1, :, 4, 4].tolist() == [30, 20, 10]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp")]
    assert "missing.jpg" in format_summary(summary) and "corrupt.jpg" in format_summary(summary)

    bad_only = write_csv(tmp_path / "bad.csv", ["missing.jpg,a b,train", "corrupt.jpg,a b,train"])
    with pytest.raises(
        DataError,
        match="1 of the 2 image files .* do not exist, the others are unreadable; looked "
        f"for e.g. {images / 'missing.jpg'}",
    ):
        prepare(read_csv_captions(bad_only, images), tmp_path / "none", "toy")
    assert list((tmp_path / "none").iterdir()) == []  # nothing half-written


def test_no_image_found_shows_a_full_path_it_looked_for(tmp_path):
    images = tmp_path / "images"
    make_image(images / "img1.png", (1, 2, 3))
    good = write_csv(tmp_path / "good.csv", ["img1.png,a red square", "img1.png,a square"])
    with pytest.raises(
        DataError,
        match=f"none of the 1 image files .* exists; looked for e.g. "
        f"{tmp_path / 'elsewhere' / 'img1.png'} \\(is the image directory right",
    ):
        prepare(read_csv_captions(good, tmp_path / "elsewhere"), tmp_path / "out", "toy")
    swapped = write_csv(tmp_path / "swapped.csv", ["A red square.,img1.png"])  # caption,image: no header says so
    with pytest.raises(
        DataError,
        match=re.escape(
            f"looked for e.g. {images / 'A red square.'} (is the image "
            "directory right, and is each image name, the first column of a CSV "
            "file, a file name in it?)"
        ),
    ):
        prepare(read_csv_captions(swapped, images), tmp_path / "out", "toy")


def test_captions_of_missing_images_add_no_words(tmp_path):
    images = tmp_path / "images"
    make_image(images / "here.png", (1, 2, 3))
    csv_path = write_csv(tmp_path / "c.csv", ["here.png,a cat,train", "gone.png,a zebra,train"])
    caption_set = read_csv_captions(csv_path, images)
    summary = prepare(caption_set, tmp_path / "out", "toy", captions_per_image=1, min_word_freq=0, image_size=8)
    assert summary.skipped_images == {"gone.png": "missing file"}
    word_map = PreparedData(tmp_path / "out", summary.base_name).load_word_map()
    assert list(word_map)[1:3] == ["a", "cat"] and "zebra" not in word_map
    assert summary.vocab_size == len(word_map) == 6


def test_warnings_for_mostly_unknown_words_and_tiny_eval_splits(tmp_path):
    images = tmp_path / "images"
    for name in ("t1.png", "t2.png", "v.png"):
        make_image(images / name, (1, 2, 3))
    csv_path = write_csv(
        tmp_path / "c.csv", ["t1.png,a black cat sleeps,train", "t2.png,a dog runs,train", "v.png,a bird,val"]
    )
    caption_set = read_csv_captions(csv_path, images)
    # only "a" is seen more than once
    summary = prepare(caption_set, tmp_path / "out", "toy", captions_per_image=1, min_word_freq=1, image_size=8)
    assert summary.warnings == [
        "67% of the caption words (6 of 9) are not in the vocabulary of 5 entries and become <unk>: lower "
        "--min-word-freq or prepare more captions",
        "val has 1 images (fewer than 5): its scores say little",
        "test has 0 images (fewer than 5): its scores say little",
    ]
    assert "\nwarning: val has 1 images" in format_summary(summary)

    synthetic = read_synthetic(60, tmp_path / "synthetic", seed=3, image_size=16)
    healthy = prepare(synthetic, tmp_path / "ok", "synthetic", min_word_freq=0, image_size=16)
    assert healthy.images["val"] >= 5 and healthy.images["test"] >= 5
    assert healthy.warnings == [] and "\nwarning:" not in format_summary(healthy)


def test_same_inputs_and_seed_give_byte_identical_files(tmp_path):
    runs = []
    for run in ("a", "b"):
        out = tmp_path / run
        caption_set = read_synthetic(30, out / "synthetic_images", seed=7)
        prepare(caption_set, out, "synthetic", captions_per_image=2, min_word_freq=1, image_size=32, seed=11)
        runs.append({str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert runs[0].keys() == runs[1].keys()
    assert any(name.endswith(".hdf5") for name in runs[0]) and len(runs[0]) > 30
    for name in runs[0]:
        assert runs[0][name] == runs[1][name], name


# --------------------------------------------------------------------------------------------------------------
# command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "prepare_data.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_synthetic_smoke(tmp_path):
    result = run_cli("--dataset", "synthetic", "--num-images", "40", "--image-size", "32", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "base name: synthetic_5_cap_per_img_5_min_word_freq" in result.stdout
    assert (tmp_path / "TRAIN_IMAGES_synthetic_5_cap_per_img_5_min_word_freq.hdf5").is_file()
    assert len(list((tmp_path / "synthetic_images").glob("*.png"))) == 40


def test_cli_missing_karpathy_json_is_a_one_line_error(tmp_path):
    missing_json, out = str(tmp_path / "nope.json"), str(tmp_path / "out")
    result = run_cli(
        "--dataset", "flickr8k", "--karpathy-json", missing_json, "--image-dir", str(tmp_path), "--data-dir", out
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "nope.json" in result.stderr
    assert not (tmp_path / "out").exists()
