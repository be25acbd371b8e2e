"""Hand the memory glibc keeps for reuse back to the OS, so the server's RSS stays steady.

GDAL reads tiles, previews and conversions in FastAPI's worker threads. glibc gives
threads their own malloc arenas (up to 8 per core) and keeps what they free inside them,
so under a tile load the RSS creeps up although nothing leaks (see titiler issue #1477).
Every `ASTRA_MALLOC_TRIM_SECONDS` the app calls glibc's `malloc_trim(0)`, which returns
the free pages of every arena. With another C library it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MemorySettings(BaseSettings):
    """How often freed memory is returned to the OS."""

    model_config = SettingsConfigDict(env_prefix="ASTRA_MALLOC_", extra="ignore")

    trim_seconds: float = Field(default=30.0, ge=0, description="0 turns trimming off.")


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None when the process's C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


async def trim_periodically(seconds: float) -> None:
    """Run until cancelled, trimming every `seconds` (in a thread: it walks every arena)."""
    trim = malloc_trim()
    if trim is None or seconds <= 0:
        return
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(trim, 0)
