"""api.schedules.retention: which scheduled backups retention deletes (SPEC invariant 6)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.schedules.retention import Candidate, to_delete

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SCHEDULE = "sched-1"


def backup(
    id: str,
    days_ago: float | None,
    *,
    status: str = "completed",
    type: str = "scheduled",
    schedule_id: str | None = SCHEDULE,
) -> Candidate:
    """A backup created an hour before it completed `days_ago` days before NOW."""
    completed_at = None if days_ago is None else NOW - timedelta(days=days_ago)
    created_at = (completed_at or NOW) - timedelta(hours=1)
    return Candidate(
        id=id,
        schedule_id=schedule_id,
        type=type,
        status=status,
        completed_at=completed_at,
        created_at=created_at,
    )


HISTORY = [backup("old-2", 20), backup("old-1", 30), backup("new", 1), backup("mid", 5)]


@pytest.mark.parametrize("retention_days", [None, 0, -3])
def test_no_retention_keeps_everything(retention_days: int | None) -> None:
    assert to_delete(HISTORY, SCHEDULE, retention_days, NOW) == []


def test_completed_scheduled_backups_older_than_the_window_go_oldest_first() -> None:
    assert to_delete(HISTORY, SCHEDULE, 7, NOW) == ["old-1", "old-2"]


def test_a_wide_window_deletes_nothing() -> None:
    assert to_delete(HISTORY, SCHEDULE, 365, NOW) == []


def test_the_newest_completed_backup_stays_even_when_older_than_the_window() -> None:
    history = [backup("older", 100), backup("newest", 40)]
    assert to_delete(history, SCHEDULE, 7, NOW) == ["older"]
    assert to_delete([backup("only", 100)], SCHEDULE, 7, NOW) == []


@pytest.mark.parametrize("status", ["pending", "in_progress", "failed"])
def test_unfinished_and_failed_backups_are_never_deleted(status: str) -> None:
    history = [backup("odd", 90, status=status), backup("keep", 1)]
    assert to_delete(history, SCHEDULE, 7, NOW) == []


@pytest.mark.parametrize("status", ["pending", "in_progress", "failed"])
def test_a_newer_unfinished_or_failed_backup_never_counts_as_the_newest(status: str) -> None:
    # The last good backup is 30 days old; a run after it did not complete. The good one stays.
    history = [backup("last-good", 30), backup("newer", 1, status=status)]
    assert to_delete(history, SCHEDULE, 7, NOW) == []
    history.append(backup("older-good", 60))
    assert to_delete(history, SCHEDULE, 7, NOW) == ["older-good"]


@pytest.mark.parametrize("kind", ["pre_restore", "manual", "pre_update"])
def test_only_scheduled_backups_are_deleted(kind: str) -> None:
    history = [backup("other-kind", 90, type=kind), backup("newest", 1)]
    assert to_delete(history, SCHEDULE, 7, NOW) == []


def test_a_newer_non_scheduled_backup_does_not_replace_the_newest_scheduled_one() -> None:
    history = [backup("last-scheduled", 30), backup("manual", 1, type="manual")]
    assert to_delete(history, SCHEDULE, 7, NOW) == []


@pytest.mark.parametrize("schedule_id", ["sched-2", None])
def test_other_schedules_backups_are_never_deleted(schedule_id: str | None) -> None:
    history = [backup("theirs", 90, schedule_id=schedule_id), backup("ours", 1)]
    assert to_delete(history, SCHEDULE, 7, NOW) == []


def test_another_schedules_newer_backup_does_not_count_as_ours() -> None:
    history = [backup("ours", 30), backup("theirs", 1, schedule_id="sched-2")]
    assert to_delete(history, SCHEDULE, 7, NOW) == []


def test_a_completed_backup_without_completed_at_is_kept() -> None:
    history = [backup("no-date", None), backup("old", 30), backup("new", 1)]
    assert to_delete(history, SCHEDULE, 7, NOW) == ["old"]


def test_the_window_boundary_keeps_a_backup_exactly_retention_days_old() -> None:
    history = [backup("at-edge", 7), backup("past-edge", 7.00001), backup("new", 0)]
    assert to_delete(history, SCHEDULE, 7, NOW) == ["past-edge"]


def test_now_may_be_in_any_timezone() -> None:
    tokyo_now = NOW.astimezone(timezone(timedelta(hours=9)))
    assert to_delete(HISTORY, SCHEDULE, 7, tokyo_now) == ["old-1", "old-2"]


def test_a_tie_for_newest_keeps_exactly_one_and_the_same_one_every_time() -> None:
    at = NOW - timedelta(days=30)
    first = Candidate("a", SCHEDULE, "scheduled", "completed", at, at - timedelta(hours=2))
    second = Candidate("b", SCHEDULE, "scheduled", "completed", at, at - timedelta(hours=1))
    assert to_delete([first, second], SCHEDULE, 7, NOW) == ["a"]
    assert to_delete([second, first], SCHEDULE, 7, NOW) == ["a"]


def test_the_input_order_does_not_matter() -> None:
    shuffled = list(HISTORY)
    random.Random(7).shuffle(shuffled)
    assert to_delete(shuffled, SCHEDULE, 7, NOW) == to_delete(HISTORY, SCHEDULE, 7, NOW)


# --- properties over random histories --------------------------------------------------------

START = datetime(2026, 1, 1, tzinfo=UTC)
moments = st.integers(0, 60 * 24 * 120).map(lambda minutes: START + timedelta(minutes=minutes))


@st.composite
def histories(draw: st.DrawFn) -> list[Candidate]:
    count = draw(st.integers(0, 25))
    history = []
    for index in range(count):
        created = draw(moments)
        finished = draw(st.one_of(st.none(), st.integers(0, 600)))
        history.append(
            Candidate(
                id=f"b{index}",
                schedule_id=draw(st.sampled_from([SCHEDULE, SCHEDULE, "sched-2", None])),
                type=draw(
                    st.sampled_from(
                        ["scheduled", "scheduled", "manual", "pre_update", "pre_restore"]
                    )
                ),
                status=draw(
                    st.sampled_from(["completed", "completed", "failed", "pending", "in_progress"])
                ),
                completed_at=None if finished is None else created + timedelta(minutes=finished),
                created_at=created,
            )
        )
    return history


def eligible(history: list[Candidate], now: datetime, days: int) -> list[Candidate]:
    """This schedule's completed `scheduled` backups that finished before the window."""
    return [
        b
        for b in history
        if b.schedule_id == SCHEDULE
        and b.type == "scheduled"
        and b.status == "completed"
        and b.completed_at is not None
        and b.completed_at < now - timedelta(days=days)
    ]


def newest_completed(history: list[Candidate], *, scheduled_only: bool) -> Candidate | None:
    """The schedule's newest completed backup (ties: later created_at, then larger id)."""
    completed = [
        b
        for b in history
        if b.schedule_id == SCHEDULE
        and b.status == "completed"
        and b.completed_at is not None
        and (b.type == "scheduled" or not scheduled_only)
    ]
    return max(completed, key=lambda b: (b.completed_at, b.created_at, b.id), default=None)


retention_days = st.one_of(st.none(), st.integers(-5, 150))


@settings(max_examples=500, deadline=None)
@given(history=histories(), days=retention_days, now=moments)
def test_retention_only_deletes_what_it_may(
    history: list[Candidate], days: int | None, now: datetime
) -> None:
    doomed = to_delete(history, SCHEDULE, days, now)
    by_id = {b.id: b for b in history}
    if days is None or days <= 0:
        assert doomed == []
        return
    cutoff = now - timedelta(days=days)
    for backup_id in doomed:
        b = by_id[backup_id]
        assert b.status == "completed", f"{b} is not completed"
        assert b.type == "scheduled", f"{b} is not a scheduled backup"
        assert b.schedule_id == SCHEDULE, f"{b} belongs to another schedule"
        assert b.completed_at is not None
        assert b.completed_at < cutoff, f"{b} is inside the {days}-day window"
    for scheduled_only in (True, False):
        newest = newest_completed(history, scheduled_only=scheduled_only)
        assert newest is None or newest.id not in doomed, f"newest completed {newest} deleted"
    assert len(set(doomed)) == len(doomed)


@settings(max_examples=500, deadline=None)
@given(history=histories(), days=st.integers(1, 150), now=moments)
def test_retention_deletes_everything_it_should(
    history: list[Candidate], days: int, now: datetime
) -> None:
    doomed = to_delete(history, SCHEDULE, days, now)
    newest = newest_completed(history, scheduled_only=True)
    expected = [b for b in eligible(history, now, days) if newest is None or b.id != newest.id]
    assert sorted(doomed) == sorted(b.id for b in expected), "something that should go was kept"
    oldest_first = sorted(expected, key=lambda b: (b.completed_at, b.created_at, b.id))
    assert doomed == [b.id for b in oldest_first], "not oldest first"


@settings(max_examples=200, deadline=None)
@given(history=histories(), days=retention_days, now=moments, seed=st.integers(0, 2**32))
def test_retention_is_deterministic(
    history: list[Candidate], days: int | None, now: datetime, seed: int
) -> None:
    shuffled = list(history)
    random.Random(seed).shuffle(shuffled)
    assert to_delete(shuffled, SCHEDULE, days, now) == to_delete(history, SCHEDULE, days, now)
