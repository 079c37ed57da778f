"""Decoded entries, reused while the stored bytes are unchanged.

Every hit still reads the slot from the cache tier, so a purge or a newer fill by any
proxy is seen at once: the memo only skips decoding bytes identical to ones this worker
decoded before, and with them the parsing an Entry caches (its Cache-Control, its age).
"""

from .entry import Entry, decode_entry

# A hot object is read on most hits, so a few hundred slots hold the working set that
# decoding would otherwise dominate. Each kept entry holds its bytes twice (the stored
# form to compare with, and the decoded body), hence the byte budget.
MAX_SLOTS = 512
MAX_BYTES = 8 * 1024 * 1024


class DecodedEntries:
    def __init__(self, max_slots: int = MAX_SLOTS, max_bytes: int = MAX_BYTES) -> None:
        self._max_slots = max_slots
        self._max_bytes = max_bytes
        self._size = 0
        # slot -> (the stored bytes, their decoding); insertion order is eviction order.
        self._slots: dict[bytes, tuple[bytes, Entry]] = {}

    def decode(self, slot: bytes, data: bytes) -> Entry:
        """``decode_entry(data)``, reusing the Entry last decoded for ``slot`` if it came
        from the same bytes; UnreadableEntry as decode_entry."""
        kept = self._slots.get(slot)
        if kept is not None:
            if kept[0] == data:
                return kept[1]
            self._forget(slot)
        entry = decode_entry(data)
        if len(data) <= self._max_bytes:
            while self._slots and (
                len(self._slots) >= self._max_slots or self._size + len(data) > self._max_bytes
            ):
                self._forget(next(iter(self._slots)))
            self._slots[slot] = (data, entry)
            self._size += len(data)
        return entry

    def _forget(self, slot: bytes) -> None:
        data, _ = self._slots.pop(slot)
        self._size -= len(data)
