"""Data preparation under faults: a crash halfway leaves no output that looks complete, and no temp files."""

from __future__ import annotations

import pytest
from PIL import Image

import captioning.prepare as prepare
from captioning.prepare import prepare_dataset, read_csv_captions


def make_dataset(tmp_path, count: int = 12):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(count):
        Image.new("RGB", (10, 10), (i * 20, 0, 0)).save(images / f"im{i}.png")
        split = "train" if i < 8 else "val"
        rows += [f"im{i}.png,a red thing number {i},{split}", f"im{i}.png,  ,{split}", f"im{i}.png,ünïcode ok,{split}"]
    csv_path = tmp_path / "captions.csv"
    csv_path.write_text("image,caption,split\n" + "\n".join(rows + rows[:3]) + "\n", encoding="utf-8")
    return read_csv_captions(csv_path, images)


def test_crash_while_writing_the_second_split_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    caption_set = make_dataset(tmp_path)
    real_load = prepare.load_pixels
    calls = {"n": 0}

    def failing_load(path, image_size):
        calls["n"] += 1
        if calls["n"] == 10:  # train has 8 images: this is inside the val split
            raise KeyboardInterrupt("killed halfway")
        return real_load(path, image_size)

    monkeypatch.setattr(prepare, "load_pixels", failing_load)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(caption_set, out, "toy", captions_per_image=2, min_word_freq=0, image_size=8, progress=False)
    assert calls["n"] == 10
    assert sorted(p.name for p in out.iterdir()) == []  # no final files, no temp files


def test_bad_rows_are_reported_and_good_ones_kept(tmp_path):
    summary = prepare_dataset(
        make_dataset(tmp_path),
        tmp_path / "out",
        "toy",
        captions_per_image=2,
        min_word_freq=0,
        image_size=8,
        progress=False,
    )
    assert summary.empty == 13 and summary.duplicates == 2  # the repeated block holds one empty row
    assert summary.images == {"train": 8, "val": 4}
    assert summary.captions_kept == 24
