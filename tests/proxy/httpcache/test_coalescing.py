"""In-worker singleflight and the fleet lease wait, with an in-memory lease store."""

import asyncio

from proxy.httpcache.coalescing import Flights, await_lease_release
from proxy.httpcache.entry import Entry
from proxy.telemetry import GaugeChild

ENTRY = Entry(200, (), b"body", 1.0, 1.0)


def test_followers_get_the_leaders_entry_and_are_counted() -> None:
    async def scenario() -> None:
        waiting = GaugeChild()
        flights = Flights(waiting)
        flight = flights.lead(b"k")
        assert flight is not None
        assert flights.lead(b"k") is None
        follower = asyncio.ensure_future(flights.follow(b"k", 5.0))
        await asyncio.sleep(0)
        assert flights.followed(b"k")
        assert waiting.value == 1
        flights.land(b"k", flight, ENTRY)
        assert await follower is ENTRY
        assert not flights.followed(b"k")
        assert waiting.value == 0
        assert flights.lead(b"k") is not None  # landed: a new flight may start

    asyncio.run(scenario())


def test_a_follower_gives_up_after_its_wait() -> None:
    async def scenario() -> None:
        flights = Flights(GaugeChild())
        flight = flights.lead(b"k")
        assert flight is not None
        assert await flights.follow(b"k", 0.01) is None
        assert not flights.followed(b"k")
        assert await flights.follow(b"other", 1.0) is None  # nothing in the air

    asyncio.run(scenario())


class LeaseStore:
    """Holds the lease for ``held_polls`` polls, counting them."""

    def __init__(self, held_polls: int) -> None:
        self.held_polls = held_polls
        self.polls = 0

    async def lease_held(self, key: bytes) -> bool:
        self.polls += 1
        return self.polls <= self.held_polls


def test_waiters_poll_only_the_lease_until_it_is_released() -> None:
    store = LeaseStore(held_polls=3)
    released = asyncio.run(await_lease_release(store, b"k", 5.0))  # type: ignore[arg-type]
    assert released
    assert store.polls == 4


def test_a_lease_never_released_times_out() -> None:
    store = LeaseStore(held_polls=10**9)
    assert not asyncio.run(await_lease_release(store, b"k", 0.05))  # type: ignore[arg-type]
    assert store.polls >= 2
