"""Frames held back for readers that are not live yet (pure)."""

from __future__ import annotations

__all__ = ["Buffered", "Held", "after"]

#: A frame and the history offset of its message (None for plain messages).
Buffered = list[tuple[int | None, bytes]]


def after(frames: Buffered, cutoff: int | None) -> list[bytes]:
    """The frames, without those of history messages at or below ``cutoff``."""
    return [f for offset, f in frames if cutoff is None or offset is None or offset > cutoff]


class Held:
    """Frames held back, and their size in bytes (the client's buffer limit bounds it)."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: Buffered = []
        self.size = 0

    def add(self, offset: int | None, frame: bytes) -> int:
        """Hold one more frame; return the size now held."""
        self.frames.append((offset, frame))
        self.size += len(frame)
        return self.size
