"""Which models and example photos the demo serves (captioning.serving), without a server: the models' page names
and the examples shelf."""

from __future__ import annotations

from pathlib import Path

from captioning import serving, shipped


def test_models_are_named_by_their_folder_or_by_their_path_when_folders_share_a_name():
    assert serving.model_names([Path("assets/model"), Path("assets/model_hard")]) == ["model", "model_hard"]
    assert serving.model_names([Path("runs/a/best"), Path("runs/b/best")]) == ["runs/a/best", "runs/b/best"]


def test_examples_from_a_folder_none_or_by_default_only_with_the_shipped_models(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.webp", "d.jpeg", "notes.txt", "e.gif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()
    shipped_dirs, mine = list(shipped.SHIPPED_MODELS.values()), [tmp_path / "runs" / "best"]
    assert serving.served_examples(str(tmp_path), mine) == [
        str(tmp_path / n) for n in ("a.jpg", "b.PNG", "c.webp", "d.jpeg")
    ]
    assert serving.served_examples(str(tmp_path), shipped_dirs)[0] == str(tmp_path / "a.jpg")
    assert serving.served_examples("none", shipped_dirs) == [] and serving.served_examples("None", mine) == []
    assert serving.served_examples(None, shipped_dirs) == shipped.example_photos()  # the Flickr8k scenes
    assert serving.served_examples(None, shipped_dirs[1:]) == shipped.example_photos()
    assert serving.served_examples(None, mine) == [] and serving.served_examples(None, shipped_dirs + mine) == []


def test_a_missing_hard_model_is_named_from_the_repository_root(monkeypatch):
    monkeypatch.setitem(shipped.SHIPPED_MODELS, "model_hard", shipped.ASSETS_DIR / "model_hard_missing")
    directories, note = serving.default_model_dirs()
    assert directories == [shipped.SHIPPED_MODELS["model"]]
    assert note == "note: assets/model_hard_missing (the hard-attention model) is not there: serving assets/model only"
