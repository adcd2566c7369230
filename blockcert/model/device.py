"""``--device cpu|cuda|mps|auto``: where the model and the IR replay run. Traces and every artifact stay on
the CPU; the numpy reference of the verifier always runs on the CPU."""

from __future__ import annotations

from collections.abc import Callable

from blockcert.errors import UserError

DEVICES = ("cpu", "cuda", "mps", "auto")


def _available() -> dict[str, bool]:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return {"cuda": torch.cuda.is_available(), "mps": bool(mps is not None and mps.is_available())}


def resolve_device(name: str, announce: Callable[[str], None] | None = None) -> str:
    """The torch device ``name`` stands for. ``auto`` picks CUDA, then MPS, then the CPU, and tells
    ``announce`` when it falls back to the CPU; asking for a device this machine does not have is a usage error."""
    if name not in DEVICES:
        raise UserError(f"unknown --device {name!r}", f"choose one of: {', '.join(DEVICES)}")
    if name == "cpu":
        return "cpu"
    have = _available()
    if name == "auto":
        for device in ("cuda", "mps"):
            if have[device]:
                return device
        if announce is not None:
            announce("--device auto: no CUDA or MPS device here; running on the CPU")
        return "cpu"
    if not have[name]:
        what = "CUDA (an NVIDIA GPU with a CUDA build of torch)" if name == "cuda" else "MPS (Apple silicon with an MPS build of torch)"
        raise UserError(f"--device {name}: this machine has no {what}", "use --device cpu, or --device auto to take what there is")
    return name
