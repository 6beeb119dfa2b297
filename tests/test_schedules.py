"""Schedules and the beat, in one process: ticks, time zones, missed ticks, one job per tick."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from jobkit import App
from jobkit.beat import LEAD_FOR_S, MAX_LATE_TICKS, Beat
from jobkit.errors import ConfigError
from jobkit.schedules import UTC, Schedule, last_tick


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


class Clock:
    def __init__(self, start: str) -> None:
        self.now = at(start)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def app(backend_url: str) -> App:
    app = App("beat", broker="memory://", backend=backend_url)

    @app.periodic(every=10, args=(1,), kwargs={"b": 2})
    def ten(a: int, b: int) -> int:
        return a + b

    return app


def periodic_jobs(app: App) -> list[str]:
    return sorted(r["idempotency_key"] for r in app.backend.find(limit=1000) if r["idempotency_key"])


def test_every_ticks_on_multiples_since_the_epoch() -> None:
    s = Schedule("s", "t", every=30)
    assert s.tick_at_or_before(at("2026-01-01T00:00:59+00:00")) == at("2026-01-01T00:00:30+00:00")
    assert s.tick_at_or_before(at("2026-01-01T00:01:00+00:00")) == at("2026-01-01T00:01:00+00:00")
    assert s.tick_after(at("2026-01-01T00:01:00+00:00")) == at("2026-01-01T00:01:30+00:00")


def test_cron_ticks_in_its_time_zone_across_a_dst_change() -> None:
    paris = Schedule("s", "t", cron="30 2 * * *", tz="Europe/Paris")
    # 2026-03-29: 02:00 -> 03:00 in Paris; 02:30 does not exist that night
    assert paris.tick_after(at("2026-03-28T00:00:00+00:00")) == at("2026-03-28T01:30:00+00:00")
    assert paris.tick_after(at("2026-03-30T00:00:00+00:00")) == at("2026-03-30T00:30:00+00:00")
    utc = Schedule("u", "t", cron="*/5 * * * *")
    assert utc.tick_at_or_before(at("2026-01-01T00:05:00+00:00")) == at("2026-01-01T00:05:00+00:00")
    assert utc.tick_at_or_before(at("2026-01-01T00:04:59+00:00")) == at("2026-01-01T00:00:00+00:00")


@pytest.mark.parametrize("kwargs", [
    {}, {"cron": "* * * * *", "every": 5}, {"cron": "not cron"}, {"every": 0}, {"every": 1.5},
    {"every": True}, {"cron": "* * * * *", "tz": "Mars/Olympus"}, {"every": 5, "args": ({1},)},
])
def test_bad_schedules_fail_at_registration(kwargs: dict[str, Any]) -> None:
    app = App("bad", broker="memory://", backend="memory://")
    with pytest.raises(ConfigError):
        app.periodic(**kwargs)(lambda: None)
    assert not app.tasks and not app.schedules


def test_periodic_registers_a_task_with_its_options() -> None:
    app = App("p", broker="memory://", backend="memory://")

    @app.periodic(cron="0 * * * *", tz="Asia/Tokyo", queue="cron", max_retries=2)
    def hourly() -> None: ...

    assert app.tasks["hourly"].options.queue == "cron"
    assert app.tasks["hourly"].options.max_retries == 2
    assert app.schedules["hourly"].describe()["tz"] == "Asia/Tokyo"


def test_each_tick_is_one_job_whatever_the_number_of_beats(app: App) -> None:
    clock = Clock("2026-01-01T00:00:05+00:00")
    beats = [Beat(app, now=clock) for _ in range(3)]
    for beat in beats:
        assert beat.step(list(app.schedules.values())) == 0  # never ran: starts with the next tick
    created = 0
    for _ in range(6):
        clock.advance(10)
        created += sum(beat.step(list(app.schedules.values())) for beat in beats)
    assert created == 6
    keys = periodic_jobs(app)
    assert keys == [f"periodic:ten:2026-01-01T00:0{m}:{s}0+00:00" for m, s in
                    [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 0)]]
    record = app.backend.find(limit=1)[0]
    assert (record["task"], record["args"], record["kwargs"]) == ("ten", [1], {"b": 2})
    assert last_tick(app.backend, app.schedules["ten"]) == at("2026-01-01T00:01:00+00:00")


def test_after_downtime_the_most_recent_missed_tick_runs_once(app: App) -> None:
    clock = Clock("2026-01-01T00:00:05+00:00")
    schedules = list(app.schedules.values())
    first = Beat(app, now=clock)
    first.step(schedules)
    clock.advance(10)
    assert first.step(schedules) == 1  # 00:00:10
    clock.advance(3600)  # down for an hour: 360 ticks missed
    assert Beat(app, now=clock).step(schedules) == 1
    assert periodic_jobs(app)[-1] == "periodic:ten:2026-01-01T01:00:10+00:00"
    assert len(periodic_jobs(app)) == 2


def test_a_running_beat_that_falls_behind_sends_each_late_tick(app: App) -> None:
    clock = Clock("2026-01-01T00:00:05+00:00")
    schedules = list(app.schedules.values())
    beat = Beat(app, now=clock)
    beat.step(schedules)
    clock.advance(30)  # late by three ticks (a busy machine)
    assert beat.step(schedules) == 3
    clock.advance(10 * (MAX_LATE_TICKS + 40))
    assert beat.step(schedules) == MAX_LATE_TICKS


def test_one_scheduler_leads_and_another_takes_over_when_it_stops(app: App) -> None:
    clock = Clock("2026-01-01T00:00:05+00:00")
    schedules = list(app.schedules.values())
    first, second = Beat(app, now=clock), Beat(app, now=clock)
    first.step(schedules)
    second.step(schedules)
    assert first.leading and not second.leading
    clock.advance(10)
    assert (first.step(schedules), second.step(schedules)) == (1, 0)
    first._step_down()  # stopped: gives the lead up
    clock.advance(25)  # 00:00:40: the ticks of :20, :30 and :40 are due
    assert second.step(schedules) == 3  # a takeover sends each recent missed tick
    assert second.leading
    assert first.step(schedules) == 0 and not first.leading


def test_a_leader_that_stalls_past_its_lease_is_replaced(app: App) -> None:
    clock = Clock("2026-01-01T00:00:05+00:00")
    schedules = list(app.schedules.values())
    first, second = Beat(app, now=clock), Beat(app, now=clock)
    first.step(schedules)
    clock.advance(10)
    assert first.step(schedules) == 1  # 00:00:10; its lease lasts until 00:00:30
    clock.advance(LEAD_FOR_S + 1)  # first is frozen (a long pause) until 00:00:31
    assert second.step(schedules) == 2 and second.leading  # :20 and :30
    assert first.step(schedules) == 0 and not first.leading


def test_list_schedules_shows_last_and_next_run(app: App) -> None:
    [listed] = app.list_schedules()
    assert listed["last_run"] is None and listed["every"] == 10 and listed["task"] == "ten"
    now = dt.datetime.now(UTC)
    Beat(app).send(app.schedules["ten"], app.schedules["ten"].tick_at_or_before(now))
    [listed] = app.list_schedules()
    assert at(listed["last_run"]) <= now < at(listed["next_run"])
