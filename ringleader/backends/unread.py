"""Whether a backend connection has a reply waiting that the event loop has not read.

A request watchdog asks before it fails a request as timed out. A worker held back longer
than the request timeout (a stalled or oversubscribed host) runs its due timers before it
reads its sockets (libuv's order, so uvloop's), and would otherwise fail requests whose
replies are already in the socket buffer, late only by the stall. The watchdog then looks
again after UNREAD_GRACE_SECONDS, by when the loop has read them.
"""

from __future__ import annotations

import asyncio
import select

UNREAD_GRACE_SECONDS = 0.001


def unread(transport: asyncio.BaseTransport | None) -> bool:
    """Whether `transport`'s socket holds bytes not read yet (or an error or EOF to read)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    poller = select.poll()
    try:
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False
