"""The lease contract (limits and schedules) on every backend: memory, sqlite, mongo."""
from __future__ import annotations

import threading

from jobkit.backends import Backend, backend_from_url
from jobkit.backends.base import FREE_LEASE_KEEP_S


def test_a_key_has_as_many_leases_as_slots(backend: Backend) -> None:
    assert backend.acquire("k", "a", slots=2, now=100.0, until=110.0) == 0.0
    assert backend.acquire("k", "b", slots=2, now=100.0, until=105.0) == 0.0
    wait = backend.acquire("k", "c", slots=2, now=101.0, until=111.0)
    assert wait == 4.0  # the first lease ends at 105
    assert {lease["holder"] for lease in backend.leases("k")} == {"a", "b"}


def test_a_lease_is_free_once_it_ended(backend: Backend) -> None:
    backend.acquire("k", "a", slots=1, now=100.0, until=110.0)
    assert backend.acquire("k", "b", slots=1, now=109.9, until=120.0) > 0
    assert backend.acquire("k", "b", slots=1, now=110.0, until=120.0) == 0.0
    assert [lease["holder"] for lease in backend.leases("k")] == ["b"]


def test_keys_are_apart(backend: Backend) -> None:
    assert backend.acquire("k1", "a", slots=1, now=100.0, until=110.0) == 0.0
    assert backend.acquire("k2", "a", slots=1, now=100.0, until=110.0) == 0.0
    assert backend.leases("k3") == []


def test_hold_renews_or_frees_only_the_holders_lease(backend: Backend) -> None:
    backend.acquire("k", "a", slots=1, now=100.0, until=110.0)
    assert backend.hold("k", "a", until=130.0)
    assert backend.acquire("k", "b", slots=1, now=120.0, until=140.0) == 10.0
    assert not backend.hold("k", "b", until=None)  # b holds nothing
    assert backend.hold("k", "a", until=None)
    [lease] = backend.leases("k")
    assert lease["holder"] is None
    assert backend.acquire("k", "b", slots=1, now=lease["until"], until=200.0) == 0.0


def test_fewer_slots_than_leases_made_count_only_the_first(backend: Backend) -> None:
    for holder in "abc":
        backend.acquire("k", holder, slots=3, now=100.0, until=110.0)
    assert backend.acquire("k", "d", slots=1, now=100.0, until=110.0) == 10.0
    assert backend.acquire("k", "d", slots=4, now=100.0, until=110.0) == 0.0


def test_no_two_callers_take_the_same_lease(backend_url: str) -> None:
    """Threads with their own connections race for 5 leases: exactly 5 win."""
    winners: list[str] = []
    backends = [backend_from_url(backend_url) for _ in range(8)] if backend_url != "memory://" else None
    shared = backend_from_url(backend_url) if backends is None else None

    def race(index: int) -> None:
        mine = backends[index] if backends is not None else shared
        assert mine is not None
        for attempt in range(5):
            holder = f"{index}.{attempt}"
            if mine.acquire("race", holder, slots=5, now=100.0, until=200.0) == 0.0:
                winners.append(holder)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 5
    checker = backends[0] if backends is not None else shared
    assert checker is not None
    assert sorted(lease["holder"] for lease in checker.leases("race")) == sorted(winners)
    for instance in backends or [shared]:
        assert instance is not None
        instance.close()


def test_prune_forgets_long_free_leases_but_keeps_held_ones(backend: Backend) -> None:
    backend.acquire("free", "a", slots=1, now=100.0, until=110.0)
    backend.hold("free", "a", until=None)
    backend.acquire("held", "b", slots=1, now=100.0, until=110.0)
    [freed] = backend.leases("free")
    backend.prune(now=freed["until"] + FREE_LEASE_KEEP_S + 1)
    assert backend.leases("free") == []
    assert [lease["holder"] for lease in backend.leases("held")] == ["b"]
