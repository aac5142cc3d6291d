"""The command-line tools as a new user meets them: one vocabulary of flags, help that says what and the default,
and one line (no traceback) naming cause and fix for each misuse of the commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
from conftest import TorchThreads, data_flags

from captioning import features as feature_cache
from captioning.cli import caption, checkpoint, evaluate, features, prepare
from captioning.cli import train as train_cli
from captioning.config import DecoderConfig, EncoderSpec, ModelConfig
from captioning.encoder import resolve_spec
from captioning.precision import native_cpu_bf16

REPO = Path(__file__).resolve().parents[1]
TOOLS = {
    "prepare_data.py": prepare.build_parser,
    "captioning.cli.features": features.build_parser,
    "train.py": train_cli.build_parser,
    "captioning.cli.evaluate": evaluate.build_parser,
    "captioning.cli.caption": caption.build_parser,
    "captioning.cli.checkpoint": checkpoint.build_parser,
}
DIFFERENT_SETTINGS = {
    "batch_size": "images per encoder batch vs captions per training step",
    "seed": "data preparation vs training",
    "finetune_stages": "the prefix cache to write (0: the frozen features) vs the stages a fine-tuning run trains",
}  # same word, another setting: each help says which
LITE0 = ["--backbone", "tf_efficientnet_lite0", "--encoder-weights", "random", "--input-size", "64"]


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        action.dest: action
        for action in parser._actions
        if action.option_strings and action.dest != "help" and action.help != argparse.SUPPRESS
    }


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_flags_shared_between_tools_have_one_definition():
    seen: dict[str, tuple] = {}
    shared = set()
    for tool, build in TOOLS.items():
        for dest, action in options(build()).items():
            definition = (tuple(action.option_strings), action.default, action.help, action.type, action.choices)
            if dest in DIFFERENT_SETTINGS:
                continue
            if dest in seen:
                shared.add(dest)
                assert definition == seen[dest][1], f"--{dest}: {tool} differs from {seen[dest][0]}"
            else:
                seen[dest] = (tool, definition)
    assert {
        "data_dir",
        "data_name",
        "cache_dir",
        "image_size",
        "threads",
        "backbone",
        "encoder_weights",
        "input_size",
        "encoder_bf16",
        "split",
        "model",
        "beam_size",
        "karpathy_json",
        "image_dir",
    } <= shared


def test_the_app_takes_its_model_and_beam_flags_like_the_other_tools():
    """The app's --model is the shared flag made repeatable (it can serve several models): the same option and
    description, and the shipped models as the default; its --beam-size the shared one bounded by the page's slider."""
    from captioning.cli import app

    served, shared = options(app.build_parser()), options(caption.build_parser())
    assert served["model"].option_strings == shared["model"].option_strings
    assert (
        served["model"].help.startswith(shared["model"].help.split(";")[0]) and "assets/model" in served["model"].help
    )
    assert served["beam_size"].default == shared["beam_size"].default and list(served["beam_size"].choices) == [
        1,
        2,
        3,
        4,
        5,
    ]


def test_every_help_line_says_what_and_its_default():
    for tool, build in TOOLS.items():
        parser = build()
        assert parser.prog.startswith("python "), parser.prog  # the command to type, not a file name
        text = parser.format_help()
        assert "default: ''" not in text, tool
        for dest, action in options(parser).items():
            assert action.help, f"{tool} --{dest} has no help"
            shown = parser.formatter_class(parser.prog)._get_help_string(action)
            if action.required:
                assert shown.endswith("(required)"), (tool, dest)
            elif action.default not in (None, False, "") and not isinstance(action, argparse.BooleanOptionalAction):
                assert "default" in shown, (tool, dest, shown)
            if action.choices:
                assert all(str(choice) in text for choice in action.choices), (tool, dest)


def test_default_trunk_is_the_offline_lite2_of_the_shipped_model():
    shipped = ModelConfig.load(REPO / "assets" / "model" / "config.json").encoder
    assert resolve_spec(EncoderSpec()) == shipped == EncoderSpec("tf_efficientnet_lite2", "lite-wheel", 448, True, 14)
    assert train_cli.resolve_config(train_cli.given_flags(["--data-name", "x"])).encoder == shipped
    b4 = train_cli.resolve_config(train_cli.given_flags(["--data-name", "x", "--backbone", "efficientnet_b4"]))
    assert b4.encoder == dataclasses.replace(shipped, backbone="efficientnet_b4", weights="timm")


def test_train_flags_default_to_train_config_and_override_a_resumed_run_in_order(tmp_path):
    """train.py: left out, every flag is TrainConfig's default; with --resume the saved config is the start, the
    flags given replace its fields, the run directory is the resumed one (docs/training.md's table)."""
    defaults = train_cli.TrainConfig()
    plain = train_cli.resolve_config(train_cli.given_flags([]))
    assert plain == dataclasses.replace(defaults, encoder=resolve_spec(defaults.encoder))
    parsed = vars(train_cli.build_parser().parse_args([]))  # the defaults --help shows; --data-name has none
    shown = {
        f.name: value for f, value in train_cli.flag_fields(defaults) if f.name in parsed and f.name != "data_name"
    }
    assert {name: parsed[name] for name in shown} == shown
    saved = dataclasses.replace(plain, data_name="x", epochs=3, decoder=DecoderConfig(attention="hard"))
    (tmp_path / "train_config.json").write_text(json.dumps(dataclasses.asdict(saved)))
    resumed = train_cli.resolve_config(train_cli.given_flags(["--resume", str(tmp_path), "--epochs", "9"]))
    assert resumed == dataclasses.replace(saved, epochs=9, output_dir=str(tmp_path))
    wider = train_cli.resolve_config(train_cli.given_flags(["--resume", str(tmp_path), "--input-size", "224"]))
    assert wider.encoder == dataclasses.replace(saved.encoder, input_size=224) and wider.decoder == saved.decoder


def test_b4_offline_is_one_line_naming_the_offline_trunks(shapes_data, tmp_path, monkeypatch, capsys):
    import captioning.model as model

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(model, "Encoder", offline)
    shapes = data_flags(shapes_data["data_dir"], shapes_data["data_name"])
    code = train_cli.main([*shapes, "--backbone", "efficientnet_b4", "--output-dir", str(tmp_path / "run")])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "efficientnet_b4 ImageNet weights need a download" in line
    assert "tf_efficientnet_lite0 / lite1 / lite2" in line


def test_features_with_a_wrong_data_name(shapes_data, tmp_path, capsys):
    other_name = data_flags(shapes_data["data_dir"], "flickr8k")
    code = features.main(["--split", "VAL", "--cache-dir", str(tmp_path), *other_name, *LITE0])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "no prepared data named 'flickr8k'" in line and shapes_data["data_name"] in line


def test_features_refuse_other_settings_and_say_already_complete(shapes_data, tmp_path, capsys):
    shapes = data_flags(shapes_data["data_dir"], shapes_data["data_name"])
    args = ["--split", "VAL", "--cache-dir", str(tmp_path), *shapes, "--image-size", "32", "--threads", "1", *LITE0]
    assert features.main(args) == 0
    capsys.readouterr()
    assert features.main(args) == 0
    assert "already complete (4 images): nothing to do" in capsys.readouterr().out
    before = (tmp_path / f"VAL_FEATURES_{shapes_data['data_name']}.npy").read_bytes()
    made = json.loads((tmp_path / f"VAL_FEATURES_{shapes_data['data_name']}.json").read_text())["encoder"]["bf16"]
    assert made == native_cpu_bf16()  # the default: bf16 only where the CPU runs it natively
    code = features.main([*args, "--encoder-bf16" if not made else "--no-encoder-bf16"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and f"bf16: cache {made} vs now {not made}" in line and "use another --cache-dir" in line
    assert (tmp_path / f"VAL_FEATURES_{shapes_data['data_name']}.npy").read_bytes() == before  # kept as it was


@pytest.mark.parametrize("native", [True, False])
def test_features_default_to_bf16_only_where_it_is_native(shapes_data, tmp_path, monkeypatch, capsys, native):
    monkeypatch.setattr(features, "native_cpu_bf16", lambda: native)
    shapes = data_flags(shapes_data["data_dir"], shapes_data["data_name"])
    args = ["--split", "VAL", "--cache-dir", str(tmp_path), *shapes, "--image-size", "32", "--threads", "1", *LITE0]
    with TorchThreads():
        assert features.main(args) == 0
    made = json.loads((tmp_path / f"VAL_FEATURES_{shapes_data['data_name']}.json").read_text())["encoder"]
    assert made["bf16"] is native


def test_ctrl_c_while_caching_is_one_line_and_130(shapes_data, tmp_path, monkeypatch, capsys):
    calls = []

    def interrupted_encode(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode(*args)

    encode = feature_cache.encode_pixels
    monkeypatch.setattr(feature_cache, "encode_pixels", interrupted_encode)
    shapes = data_flags(shapes_data["data_dir"], shapes_data["data_name"])
    args = ["--split", "TRAIN", "--cache-dir", str(tmp_path), *shapes, "--batch-size", "8", "--threads", "1", *LITE0]
    code = features.main(args)
    err = capsys.readouterr().err
    message = [line for line in err.splitlines() if line.strip() and "features TRAIN" not in line]  # not the bar
    assert "Traceback" not in err and message == ["interrupted at 8/32 images; rerun the same command to continue"]
    assert code == 130


def test_csv_without_a_caption_column_and_a_row_without_caption(tmp_path, capsys):
    captions_file, image_dir, data_dir = tmp_path / "c.csv", tmp_path / "images", tmp_path / "out"
    image_dir.mkdir()
    csv_input = ["--dataset", "csv", "--captions-file", str(captions_file), "--image-dir", str(image_dir)]
    args = [*csv_input, "--data-dir", str(data_dir)]
    for rows, where in ((["a.png", "b.png"], ":1:"), (["a.png,a red circle", "b.png"], ":2:")):
        captions_file.write_text("\n".join(rows) + "\n")
        code = prepare.main(args)
        line = one_line(capsys.readouterr().err)
        assert code == 2 and where in line and "row has no caption column (expected rows image,caption" in line


def test_a_split_that_was_not_prepared(shapes_data, tmp_path, tiny_model_dir, capsys):
    from captioning.data import PreparedData

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    source = PreparedData(shapes_data["data_dir"], shapes_data["data_name"])
    for path in Path(shapes_data["data_dir"]).iterdir():
        if not path.name.startswith("TEST_"):
            (data_dir / path.name).symlink_to(path)
    code = evaluate.main(["--model", str(tiny_model_dir), *data_flags(data_dir, source.data_name), "--split", "test"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "split TEST was not prepared" in line and "(prepared: TRAIN, VAL)" in line


def test_a_run_directory_given_as_model(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    for path in tiny_model_dir.iterdir():
        (run / "best" / path.name).symlink_to(path)
    code = caption.main([str(REPO / "assets" / "examples" / "cat.jpg"), "--model", str(run)])
    line = one_line(capsys.readouterr().err)
    assert (
        code == 2
        and line
        == f"error: {run} is a training run directory; its best model is {run / 'best'} (use --model {run / 'best'})"
    )


def test_evaluation_refuses_a_cache_made_at_another_input_size(shapes_data, tmp_path, capsys):
    """--cache-dir is verified against the model's whole encoder spec, not only the image names."""
    import torch

    from captioning.data import PreparedData
    from captioning.model import create_captioner

    data = PreparedData(shapes_data["data_dir"], shapes_data["data_name"])
    spec = EncoderSpec("tf_efficientnet_lite0", "random", input_size=64)
    torch.manual_seed(0)
    create_captioner(spec, data.load_word_map(), 32, DecoderConfig(8, 8, 8)).save(tmp_path / "m")
    cache_dir, prepared = str(tmp_path / "c"), data_flags(shapes_data["data_dir"], data.data_name)
    lite0_at_32_px = [*LITE0[:4], "--input-size", "32"]
    cache_args = ["--split", "VAL", "--cache-dir", cache_dir, *prepared, "--threads", "1", *lite0_at_32_px]
    assert features.main(cache_args) == 0
    capsys.readouterr()
    model_dir = str(tmp_path / "m")
    code = evaluate.main(["--model", model_dir, *prepared, "--cache-dir", cache_dir, "--no-meteor", "--threads", "1"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "input_size: cache 32 vs model 64" in line
