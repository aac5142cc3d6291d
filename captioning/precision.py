"""Whether this CPU runs bf16 natively. Without AVX512_BF16 or AMX, torch emulates bf16 convolutions and matmuls,
about 10x slower than fp32 (lite0 at 448 px: 4.4 vs 0.43 images/s measured on an AVX2-only machine)."""

from __future__ import annotations

import torch


def native_cpu_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512_BF16 or AMX); unknown (older torch) counts as True."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return True


def emulated_bf16_warning(flag: str, fp32_flag: str) -> str | None:
    """The one-line warning for a bf16 option on a CPU that would emulate it; None where bf16 is native."""
    if native_cpu_bf16():
        return None
    return (f"warning: this CPU has no native bf16 (AVX512_BF16 / AMX), so {flag} runs emulated, about 10x slower "
            f"than fp32 here; {fp32_flag} avoids that")
