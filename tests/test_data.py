"""Prepared data: split labels read in one place, and PreparedData's file names, splits and one-line errors for a
wrong data name or split."""

from __future__ import annotations

import pytest
from conftest import prepare

from captioning.data import PreparedData
from captioning.prepare import DataError, read_synthetic, split_name


def test_split_labels_and_restval_are_read_in_one_place():
    from captioning.data import SPLITS, split_of

    assert SPLITS == ("TRAIN", "VAL", "TEST")
    assert [split_of(label) for label in ("train", "restval", " Val ", "TEST")] == ["TRAIN", "TRAIN", "VAL", "TEST"]
    with pytest.raises(ValueError, match="unknown split 'dev' \\(expected one of train, restval, val, test\\)"):
        split_of("dev")
    with pytest.raises(DataError, match="rows.csv:3: unknown split 'dev'"):
        split_name("dev", "rows.csv:3")


def test_prepared_data_owns_names_splits_and_says_what_is_missing(tmp_path):
    """One layout object: tutorial file names, any-case split names, one-line errors for a wrong name or split."""
    out = tmp_path / "out"
    summary = prepare(
        read_synthetic(10, tmp_path / "images", seed=1, image_size=32), out, "synthetic", min_word_freq=0, image_size=32
    )
    data = PreparedData(out, summary.base_name)
    assert data.path("CAPTIONS", "val") == out / f"VAL_CAPTIONS_{summary.base_name}.json"
    assert data.splits() == ["TRAIN", "VAL", "TEST"] and data.image_size() == 32
    assert data.load_split("val").num_images == summary.images["val"]
    with pytest.raises(ValueError, match="unknown split 'dev' \\(expected one of TRAIN, VAL, TEST\\)"):
        data.path("IMAGES", "dev")
    with pytest.raises(
        FileNotFoundError,
        match=f"no prepared data named 'flickr' in {out} \\(data names there: "
        f"{summary.base_name}\\); check --data-name",
    ):
        PreparedData(out, "flickr").load_split("train")
    data.images_path("test").unlink()
    with pytest.raises(FileNotFoundError, match="split TEST was not prepared .* \\(prepared: TRAIN, VAL\\)"):
        data.load_split("TEST")
