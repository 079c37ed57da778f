"""uvicorn's Server without its own signal handling: our processes own their signals."""

from __future__ import annotations

import contextlib
from collections.abc import Generator

import uvicorn


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises captured signals after shutdown, which would kill a supervisor
        # before it stops its workers. Callers set `should_exit` themselves instead.
        yield
