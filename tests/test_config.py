"""Model configs: reading a model's config and describing an encoder need no timm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_configs_and_encoder_specs_need_no_timm():
    """Reading a model's config or describing an encoder must not import timm (nor the encoder module)."""
    script = f"""
import sys
sys.modules["timm"] = None  # any `import timm` now fails
sys.path.insert(0, {str(ROOT)!r})
from captioning.config import EncoderSpec, ModelConfig
from captioning.shipped import SHIPPED_MODELS
configs = [ModelConfig.load(directory / "config.json") for directory in SHIPPED_MODELS.values()]
assert [c.decoder.attention for c in configs] == ["soft", "hard"], configs
spec = EncoderSpec("vgg16", bf16=False).with_changes(grid_size=7)
assert (spec.weights, spec.input_size, spec.resolved) == ("", 0, False), spec
assert "captioning.encoder" not in sys.modules
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
