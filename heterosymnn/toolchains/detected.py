"""What a detector reports: kept apart from :mod:`.toolchain` because only detecting needs it,
and a warm start, which reads the persisted toolchain record, imports that module but never
this one (each frozen dataclass costs a process ~0.6 ms to create)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .toolchain import Toolchain


@dataclass(frozen=True)
class DetectorResult:
    """What one detector found.

    Attributes
    ----------
    name : str
        The detector: ``"msvc"``, ``"gcc/clang"`` or ``"zig"``.
    toolchain : Toolchain or None
        The usable toolchain, or None.
    reason : str
        For an unusable detector, why and what to do about it; for a usable
        one, notes worth showing (e.g. why OpenMP is off).
    """

    name: str
    toolchain: Optional[Toolchain]
    reason: str

    @property
    def usable(self) -> bool:
        return self.toolchain is not None
