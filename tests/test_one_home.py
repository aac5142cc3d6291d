"""Each default and shared name is written once, in its home, and read from there everywhere else: the default beam
size (search.DEFAULT_BEAM_SIZE), data preparation's settings (prepare.py, data.STORED_IMAGE_SIZE, data.DATA_DIR), a
training run's folder and file names (checkpoint.py), the objectives' weights (loss.py) and self-critical settings
(scst.py), the feature cache's batch size (features.CACHE_BATCH_SIZE), the messages Python shows and serves to the
page (handlers.NO_PHOTO, NO_CAPTION, DAMAGED_CAPTION, EMPTY_CAPTION), the demo's serving defaults (cli/args.py: HOST,
PORT, ...) and the heatmap's opacity curve (heatmap.HeatmapSpec, served to the page as tables). Scans the library's
code (docstrings aside) and the page's scripts."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from captioning.handlers import EMPTY_CAPTION
from captioning.heatmap import HEATMAP

ROOT = Path(__file__).resolve().parents[1]
# value -> the one file that may write it
HOMES = {
    "train_config.json": "captioning/checkpoint.py",
    "train_state.pt": "captioning/checkpoint.py",
    "best": "captioning/checkpoint.py",
    "last": "captioning/checkpoint.py",
    "Please upload an image first.": "captioning/handlers.py",
    "Caption an image first.": "captioning/handlers.py",
    "This caption's word data is damaged or incomplete. Please caption the image again.": "captioning/handlers.py",
    "interrupted during start-up; nothing is being served": "captioning/cli/app.py",
    EMPTY_CAPTION: "captioning/handlers.py",
}
# the opacity curve's parameters: the page reads the curve as served tables (HEATMAP.to_page()["opacity"]), so a
# script neither names them nor types their values
CURVE = {name: getattr(HEATMAP, name) for name in ("max_opacity", "opacity_gamma", "hard_opacity")}
# parameters and flags whose default is a named constant of its home, never a literal
DEFAULTED_PARAMETERS = {
    *("beam", "beam_size", "default_beam", "captions_per_image", "min_word_freq", "image_size", "vocab_splits"),
    *("attention_penalty", "reinforce_weight", "entropy_weight", "soft_context_probability", "baseline_decay"),
    *("samples_per_image", "baseline", "concurrency", "length_penalty"),
}
DEFAULTED_FLAGS = {
    *("--beam-size", "--captions-per-image", "--min-word-freq", "--max-len", "--image-size", "--seed"),
    *("--vocab-splits", "--data-dir", "--length-penalty"),
    *("--host", "--port", "--max-file-size", "--concurrency", "--queue-size", "--cache-examples"),
}
# dataclass fields (name: type = DEFAULT, or = option(DEFAULT, help)) whose default is a named constant of its home
DEFAULTED_FIELDS = {
    *("data_dir", "attention_penalty", "hard_reinforce_weight", "hard_entropy_weight", "hard_soft_probability"),
    *("scst_samples", "scst_baseline", "scst_max_len", "finetune_stages", "encoder_finetuned_stages"),
}


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def strays(root: Path) -> list[str]:
    """Where a value of HOMES is written outside its home, or a default of DEFAULTED_* is a literal."""
    found = []
    for path in sorted((root / "captioning").rglob("*.py")):
        name, tree = path.relative_to(root).as_posix(), ast.parse(path.read_text(encoding="utf-8"))
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and id(node) not in skip and HOMES.get(node.value, name) != name:
                found.append(f"{name}:{node.lineno}: {node.value!r} (home: {HOMES[node.value]})")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
                defaults += node.args.kw_defaults
                for arg, default in zip(args, defaults):
                    literal = isinstance(default, ast.Constant) and default.value is not None
                    if arg.arg in DEFAULTED_PARAMETERS and literal:
                        found.append(f"{name}:{default.lineno}: {arg.arg} = {default.value!r}")
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                default = node.value
                if isinstance(default, ast.Call) and getattr(default.func, "id", "") == "option" and default.args:
                    default = default.args[0]
                written = not any(isinstance(n, ast.Name | ast.Attribute | ast.Call) for n in ast.walk(default))
                if node.target.id in DEFAULTED_FIELDS and written:
                    found.append(f"{name}:{node.lineno}: field {node.target.id} = {ast.unparse(default)}")
            flags = [a.value for a in node.args if isinstance(a, ast.Constant)] if isinstance(node, ast.Call) else []
            if DEFAULTED_FLAGS.intersection(flags):
                found += [
                    f"{name}:{k.lineno}: {flags[0]} default={k.value.value!r}"
                    for k in node.keywords
                    if k.arg == "default" and isinstance(k.value, ast.Constant)
                ]
    for path in sorted((root / "assets" / "web").glob("*.js")):
        text = path.read_text(encoding="utf-8")
        found += [f"{path.name}: {value!r}" for value in HOMES if " " in value and value in text]
        numbers = {float(n) for n in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text)}
        found += [f"{path.name}: {name}" for name, value in CURVE.items() if name in text or value in numbers]
    return found


def test_each_default_and_shared_name_is_written_only_in_its_home():
    assert strays(ROOT) == []


def test_the_scan_finds_a_planted_stray(tmp_path):
    (tmp_path / "captioning").mkdir()
    (tmp_path / "assets" / "web").mkdir(parents=True)
    (tmp_path / "captioning" / "stray.py").write_text(
        '"""Reads train_config.json (a docstring: allowed)."""\n'
        "def caption(path, beam_size=3):\n"
        '    return path / "last" / "train_config.json"\n'
        'parser.add_argument("--beam-size", default=5)\n'
        'parser.add_argument("--seed", type=int, default=7)\n'
        'parser.add_argument("--port", type=int, default=7860)\n'
        "def prepare(captions_per_image=5, image_size=SIZE):\n"
        "    pass\n"
        "class TrainConfig:\n"
        '    attention_penalty: float = option(1.0 / 196, "lambda")\n'
        "    scst_samples: int = SCST_SAMPLES\n"
    )
    (tmp_path / "assets" / "web" / "page.js").write_text(
        "alert('Please upload an image first.');\nconst opacity = k => 0.8 * k ** spec.opacity_gamma;\n"
    )
    found = strays(tmp_path)
    assert len(found) == 11, found  # image_size=SIZE and scst_samples = SCST_SAMPLES read a constant: not counted
    assert not any(":1:" in line for line in found)  # the docstring is not counted
