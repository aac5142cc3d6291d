"""python -m captioning.cli.caption: text and JSON output, attention figures, bad inputs, --probe and --check (tiny
random model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from captioning.cli.caption import main
from captioning.model import Captioner
from captioning.preprocess import load_image
from captioning.probe import probe

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "assets" / "examples"
CAT, DOGS = str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "dogs.jpg")


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> str:
    return str(tiny_model_dir)


def test_prints_path_and_caption_per_image(model_dir, capsys):
    assert main([CAT, DOGS, "--model", model_dir, "--beam-size", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = Captioner.load(model_dir).caption(load_image(CAT), beam_size=2)[0].text
    assert lines[0] == f"{CAT}: {expected}" and expected
    assert len(lines) == 2 and lines[1].startswith(f"{DOGS}: ")


def test_json_lines_and_attention_figures(model_dir, capsys, tmp_path):
    assert main([CAT, DOGS, "--model", model_dir, "--json", "--out-dir", str(tmp_path / "figs")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in records] == [CAT, DOGS]
    for record in records:
        assert set(record) == {"image", "caption", "words", "alphas_shape", "score"}
        assert record["caption"] == " ".join(record["words"]) and record["words"]
        assert record["alphas_shape"] == [len(record["words"]), 14, 14]
        assert isinstance(record["score"], float)
    for stem in ("cat", "dogs"):
        with Image.open(tmp_path / "figs" / f"{stem}_attention.png") as figure:
            assert figure.format == "PNG" and figure.width > 300 and figure.height > 200


def test_unreadable_image_is_reported_and_the_rest_still_captioned(model_dir, capsys, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    missing = tmp_path / "missing.png"
    assert main([str(broken), str(missing), CAT, "--model", model_dir]) == 1
    out, err = capsys.readouterr()
    assert f"{broken}: cannot read image" in err and f"{missing}: cannot read image" in err
    assert "Traceback" not in err
    assert out.splitlines() == [line for line in out.splitlines() if line.startswith(f"{CAT}: ")] and out


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main([CAT, "--model", str(tmp_path / "nowhere")]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_probe_prints_each_words_probability_and_rank(model_dir, capsys):
    model = model_dir
    assert main([DOGS, "--model", model, "--probe", "A dog, on zzyzx!"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = probe(Captioner.load(model_dir), DOGS, "A dog, on zzyzx!")[0]
    assert lines[1].startswith(f'{DOGS}: probe "a dog on zzyzx": log p = {expected.total_log_prob:.2f} (the caption: ')
    assert [line.split()[0] for line in lines[2:]] == ["a", "dog", "on", "zzyzx", "<end>"]
    assert lines[2].split()[1:] == [f"p={expected.probs[0]:.4f}", "rank", str(expected.ranks[0])]
    assert lines[5].endswith("<unk>: not in the vocabulary")

    assert main([DOGS, "--model", model, "--probe", "a dog on the mat", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["probe"]["text"] == "a dog on the mat" and record["probe"]["words"] == "a dog on the mat".split()
    assert len(record["probe"]["probs"]) == len(record["probe"]["ranks"]) == 5
    assert (
        abs(sum(record["probe"]["log_probs"]) + record["probe"]["end_log_prob"] - record["probe"]["total_log_prob"])
        < 1e-3
    )

    assert main([DOGS, "--model", model, "--probe", "?!"]) == 2
    assert "error: --probe: That text has no words" in capsys.readouterr().err


@pytest.mark.slow  # 1 + 4 encoder passes per word of the caption, twice
def test_check_prints_each_words_probability_with_its_cells_hidden(model_dir, capsys):
    assert main([DOGS, "--model", model_dir, "--check", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    check = record["check"]
    assert check["words"] == record["words"] and len(check["probs_hidden_here"]) == len(record["words"])
    assert main([DOGS, "--model", model_dir, "--check"]) == 0
    out = capsys.readouterr().out
    assert "hidden here" in out and "hidden elsewhere" in out
