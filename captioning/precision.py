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
    return (
        f"warning: this CPU has no native bf16 (AVX512_BF16 / AMX), so {flag} runs emulated, about 10x slower "
        f"than fp32 here; {fp32_flag} avoids that"
    )


def inference_encoder_bf16(saved: bool, device: str | torch.device = "cpu") -> bool:
    """The encoder precision to caption with: the saved bf16 autocast where it runs natively (CPUs with bf16
    instructions; CUDA, where CPU autocast is a no-op anyway), fp32 where bf16 would be emulated (10x slower)."""
    return saved and (torch.device(device).type != "cpu" or native_cpu_bf16())


def inference_precision_note(saved: bool, used: bool) -> str | None:
    """One line when captioning runs the encoder in another precision than the model's features were made in."""
    if saved and not used:
        return (
            "note: this CPU has no native bf16, so the encoder runs in fp32 (the model's features were made "
            "under bf16 autocast; captions can differ in a few words)"
        )
    return None
