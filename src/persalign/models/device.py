"""Where models run and in which precision, chosen in one place.

    device = pick_device(None)   # cuda if available, else cpu; $PERSALIGN_DEVICE overrides
    pick_dtype(device, "auto")   # bfloat16 on a CUDA card that supports it, else float32
    # torch.float32
    pick_dtype("cpu", "bfloat16")
    # torch.bfloat16

No other module hard-codes a device or a dtype: they take ``device=None, dtype=None`` and pass
them here. An explicit argument wins over ``$PERSALIGN_DEVICE``, which wins over the automatic
choice.
"""

from __future__ import annotations

import logging
import os

import torch

from persalign.errors import ConfigError

log = logging.getLogger(__name__)

DEVICE_ENV = "PERSALIGN_DEVICE"
DEVICES = "auto, cpu, cuda or cuda:N"  # what pick_device accepts (Apple's mps is not supported)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to use: ``device``, else ``$PERSALIGN_DEVICE``, else cuda if available.

    Accepts ``None``/``"auto"``, ``"cpu"``, ``"cuda"`` and ``"cuda:N"``. Asking for CUDA on a
    machine without it is a ConfigError rather than a crash deep inside torch.
    """
    if isinstance(device, torch.device):
        requested = str(device)
    else:
        requested = (device or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(requested)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {requested!r} (use {DEVICES})") from exc
    if chosen.type == "cpu":
        return chosen
    if chosen.type != "cuda":
        raise ConfigError(f"unsupported device {requested!r} (use {DEVICES})")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} requested but CUDA is not available here")
    if chosen.index is not None and chosen.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ConfigError(f"device {requested!r} requested but only {count} CUDA device(s) exist")
    return chosen


def pick_dtype(
    device: str | torch.device | None, dtype: str | torch.dtype | None = None
) -> torch.dtype:
    """The parameter dtype: ``dtype`` when given, else bfloat16 on capable CUDA, fp16 on older CUDA,
    float32 on CPU.

    ``dtype`` may be a torch dtype or one of ``auto``, ``float32``, ``bfloat16``, ``float16``
    (``fp32``, ``bf16``, ``fp16`` also work).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    name = (dtype or "auto").strip().lower()
    if name != "auto":
        if name not in DTYPES:
            known = ", ".join(["auto", "float32", "bfloat16", "float16"])
            raise ConfigError(f"unknown dtype {dtype!r} (known: {known})")
        return DTYPES[name]
    resolved = device if isinstance(device, torch.device) else pick_device(device)
    if resolved.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
