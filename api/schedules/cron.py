"""Cron expressions: parse, describe, and compute fire times. Pure: no I/O, no clock reads.

The dialect is Vixie/Debian cron's five fields (minute hour day-of-month month day-of-week)
with `*`, ranges, steps, lists and English names; `cronsim` computes the fire times.

- Day-of-week 0 and 7 are both Sunday; names are SUN-SAT and JAN-DEC, in any case.
- When both day fields are restricted a day matches if EITHER matches ("0 0 13 * 5" fires on
  every 13th and on every Friday). As in Vixie cron, a day field that starts with `*` (also
  `*/2`) counts as unrestricted, and then both fields must match ("0 0 */2 * 5" is an
  odd-numbered day that is a Friday).
- `N/S` outside the day-of-week field means `N-max/S` (cronie and cronsim read it so); in the
  day-of-week field it is refused, because cron implementations disagree on where the range
  ends (Friday-Saturday or Friday-Sunday).
- The Quartz/cronsim extensions `L`, `W`, `#`, `?` and a seconds or years field are refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import DescriptionTypeEnum, ExpressionDescriptor
from cronsim import CronSim, CronSimError

__all__ = ["CronError", "check_timezone", "describe", "next_run", "next_runs", "parse"]


class CronError(ValueError):
    """Says which field is wrong and why, e.g. 'minute field "61": 61 is out of range 0-59'."""


ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
# Days of the week in the order a reader expects them listed: Monday first, Sunday last.
_WEEK_ORDER = (1, 2, 3, 4, 5, 6, 0)
# The most days each month can have (February: 29, in leap years).
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MINUTE, _HOUR, _DOM, _MONTH, _DOW = range(5)
_USAGE = "use 5 fields: minute hour day-of-month month day-of-week, e.g. '30 3 * * *'"
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def parse(expression: str) -> str:
    """Check a cron expression and return it normalised (single spaces, aliases expanded).

    Raises CronError naming the field and what is wrong with it.
    """
    fields = expression.split()
    if not fields:
        raise CronError(f"empty cron expression: {_USAGE}")
    if fields[0].startswith("@"):
        return _alias(fields)
    if len(fields) in (6, 7):
        raise CronError(f"seconds/years fields are not supported: {_USAGE}")
    if len(fields) != 5:
        raise CronError(f"expected 5 fields but got {len(fields)}: {_USAGE}")
    sets = [_field(index, text) for index, text in enumerate(fields)]
    if _days_combined_with_and(fields):
        # Both day fields must match, so a day-of-month no selected month has never comes.
        longest = max(_DAYS_IN_MONTH[month] for month in sets[_MONTH])
        if min(sets[_DOM]) > longest:
            raise CronError(
                f'day-of-month field "{fields[_DOM]}": no selected month has day '
                f"{min(sets[_DOM])}, so this schedule would never run"
            )
    normalised = " ".join(fields)
    try:
        next(CronSim(normalised, _EPOCH))
    except CronSimError as error:  # pragma: no cover - the checks above refuse it first
        raise CronError(f"{normalised!r}: {error}") from None
    except StopIteration:  # pragma: no cover - the checks above refuse it first
        raise CronError(f"{normalised!r} never runs") from None
    return normalised


def check_timezone(name: str) -> str:
    """The IANA timezone name, stripped of surrounding spaces; CronError if zoneinfo lacks it."""
    key = name.strip()
    problem = CronError(f"unknown timezone {name!r}: use an IANA name such as Europe/London")
    # `localtime` and `posixrules` are host-dependent links, not zones a schedule can name.
    if not key or key in ("localtime", "posixrules"):
        raise problem
    try:
        ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise problem from None
    return key


def next_runs(expression: str, timezone: str, after: datetime, count: int = 5) -> list[datetime]:
    """The next `count` fire times strictly after `after`, as aware UTC datetimes, oldest first.

    Fire times are computed on the wall clock of `timezone` by cronsim, which mimics Debian
    cron across daylight-saving changes:

    - Fixed-time jobs (neither the minute nor the hour field starts with `*`, e.g. `30 1 * * *`
      or `0 1-3 * * *`) are matched against the local wall clock. A time the clocks skip runs
      once, at the first existing minute after the gap: `30 1 * * *` in Europe/London on
      2026-03-29 runs at 02:00 BST (01:00 UTC); in America/New_York `30 2 * * *` on 2026-03-08
      runs at 03:00 EDT (07:00 UTC). A time the clocks repeat runs once, at its first
      occurrence (summer time): `30 1 * * *` in Europe/London on 2026-10-25 runs at 01:30 BST
      (00:30 UTC), not again at 01:30 GMT.
    - Wildcard jobs (the minute or the hour field starts with `*`, e.g. `0 * * * *`,
      `*/30 * * * *`, `@hourly`) follow real elapsed time: they keep their rhythm in UTC, so
      they simply do not fire in a skipped hour and fire in both copies of a repeated hour.

    Offset changes bigger than DST are not special-cased as Debian cron does for jumps over 3
    hours: when Pacific/Apia skipped 2011-12-30, that day's run came at 00:00 on the 31st.

    `after` must be timezone-aware (any zone). The schedule's own timezone decides the wall
    clock; `after` only marks the instant to start from.
    """
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("after must be a timezone-aware datetime")
    if count < 0:
        raise ValueError("count must not be negative")
    zone = ZoneInfo(check_timezone(timezone))
    runs: list[datetime] = []
    times = CronSim(parse(expression), after.astimezone(zone))
    while len(runs) < count:
        try:
            fire = next(times).astimezone(UTC)
        except StopIteration:  # pragma: no cover - cronsim gives up after 50 years
            break
        # cronsim walks fixed-time jobs on the naive wall clock, so when `after` lies in the
        # second copy of a repeated hour it can offer a time in the first copy: already past.
        if fire <= after or (runs and fire <= runs[-1]):
            continue
        runs.append(fire)
    return runs


def next_run(expression: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after `after`, as an aware UTC datetime."""
    runs = next_runs(expression, timezone, after, 1)
    if not runs:  # pragma: no cover - parse() refuses expressions that never run
        raise CronError(f"{expression!r} does not run again after {after.isoformat()}")
    return runs[0]


def describe(expression: str) -> str:
    """The expression in plain English with 24-hour times, e.g. "At 03:30, Monday through Friday".

    cron_descriptor words the minute, hour, day-of-month and month fields; the day-of-week part
    is worded here from the parsed days so it follows Vixie cron: "or on" when either day field
    may match, "but only on" when both must, nothing when the weekday restricts nothing.
    """
    fields = parse(expression).split()
    dom_days = _field(_DOM, fields[_DOM])
    weekdays = {day % 7 for day in _field(_DOW, fields[_DOW])}
    dom_limits = dom_days != set(range(1, 32))
    dow_limits = weekdays != set(range(7))
    if _days_combined_with_and(fields):
        dow_phrase = (", but only on " if dom_limits else ", only on ") if dow_limits else ""
    elif dom_limits and dow_limits:
        dow_phrase = ", or on "
    else:  # either day field matches every day, so every day runs
        dom_limits = dow_limits = False
        dow_phrase = ""
    # cron_descriptor garbles some valid fields ("1,*", "3-3/6", "5/13,8"), so it is given each
    # field's values in the plainest syntax; the day-of-week part is worded here.
    plain = [_plain_field(index, _field(index, text)) for index, text in enumerate(fields)]
    plain[_DOM] = plain[_DOM] if dom_limits else "*"
    plain[_DOW] = "*"
    descriptor = ExpressionDescriptor(
        " ".join(plain), use_24hour_time_format=True, locale_code="en_US"
    )
    text = str(descriptor.get_description())
    if not dow_phrase:
        return text
    parts = _weekday_parts(weekdays)
    if dow_phrase == ", only on " and len(parts) == 1 and " through " in parts[0]:
        dow_phrase = ", "  # "At 03:30, Monday through Friday"
    days = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    month = str(descriptor.get_description(DescriptionTypeEnum.MONTH))
    if month and text.endswith(month):
        return f"{text[: -len(month)]}{dow_phrase}{days}{month}"
    return f"{text}{dow_phrase}{days}"


def _plain_field(index: int, values: set[int]) -> str:
    """A field's values as *, */s, a-b/s, or numbers and ranges, for cron_descriptor.

    */s only where "every s ..." is true: s divides the field (minutes, hours), or days of the
    month (the count restarts on the 1st). Months are listed, as names read best.
    """
    low, high = _BOUNDS[index]
    ordered = sorted(values)
    size = high - low + 1
    if len(ordered) == size:
        return "*"
    first, last = ordered[0], ordered[-1]
    step = ordered[1] - first if len(ordered) >= 2 else 0
    if index != _MONTH and step > 1 and ordered == list(range(first, last + 1, step)):
        if first == low and last + step > high and (size % step == 0 or index == _DOM):
            return f"*/{step}"
        if len(ordered) >= 3:
            return f"{first}-{last}/{step}"
    runs: list[list[int]] = []
    for number in ordered:
        if runs and runs[-1][-1] == number - 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    items: list[str] = []
    for run in runs:
        if len(run) >= 3:
            items.append(f"{run[0]}-{run[-1]}")
        else:
            items.extend(str(number) for number in run)
    return ",".join(items)


def _alias(fields: list[str]) -> str:
    alias = fields[0].lower()
    if alias == "@reboot":
        raise CronError("@reboot is not supported: a schedule needs fire times; " + _USAGE)
    if alias not in ALIASES:
        names = " ".join(ALIASES)
        raise CronError(f"unknown alias {fields[0]!r}: use one of {names}, or 5 fields")
    if len(fields) > 1:
        raise CronError(f"{fields[0]} stands alone: nothing may follow it")
    return ALIASES[alias]


def _days_combined_with_and(fields: list[str]) -> bool:
    """Vixie cron: if either day field starts with `*`, a day must match both."""
    return fields[_DOM].startswith("*") or fields[_DOW].startswith("*")


def _field(index: int, text: str) -> set[int]:
    """The values a field selects; CronError naming the field if it is malformed."""
    name = _FIELDS[index]
    low, high = _BOUNDS[index]

    def fail(problem: str) -> CronError:
        return CronError(f'{name} field "{text}": {problem}')

    def value(token: str) -> int:
        names = _MONTHS if index == _MONTH else _DAYS if index == _DOW else None
        if token.isascii() and token.isdigit():
            number = int(token)
            if not low <= number <= high:
                raise fail(f"{number} is out of range {low}-{high}")
            return number
        if names and token.upper() in names:
            return names.index(token.upper()) + (1 if index == _MONTH else 0)
        if not token:
            raise fail("a value is missing")
        if re.fullmatch(r"[0-9A-Z]*#[0-9]*|\?|L|LW|[0-9]*[LW]|L-[0-9]*", token.upper()):
            raise fail(f'"{token}" is Quartz syntax, which standard cron does not support')
        if names:
            raise fail(f'"{token}" is not a number {low}-{high} nor a name {names[0]}-{names[-1]}')
        raise fail(f'"{token}" is not a number {low}-{high}')

    selected: set[int] = set()
    for item in text.split(","):
        if not item:
            raise fail("a list item is empty")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()):
                raise fail(f'step "{step_text}" is not a whole number')
            step = int(step_text)
            if step < 1:
                raise fail(f"step {step} must be at least 1")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = value(first), value(last)
            if start > end and index == _DOW and end == 0:
                raise fail(
                    f"range {first}-{last} runs backwards: Sunday is 0, the start of the "
                    f"week, so write {first}-7 (7 is Sunday too)"
                )
            if start > end:
                raise fail(
                    f"range {first}-{last} runs backwards: cron ranges do not wrap, "
                    f"use two ranges such as {first}-{high},{low}-{last}"
                )
        else:
            start = value(base)
            end = start
            if slash:
                if index == _DOW:
                    raise fail(
                        f'"{item}" steps from a single day, which cron implementations end on '
                        f"Saturday or on Sunday: write {base}-6/{step} or {base}-7/{step}"
                    )
                end = high  # N/S means N-max/S
        selected.update(range(start, end + 1, step))
    return selected


def _weekday_parts(weekdays: set[int]) -> list[str]:
    """E.g. {1, 2, 3, 4, 5} -> ["Monday through Friday"]; {0, 6} -> ["Saturday", "Sunday"]."""
    runs: list[list[int]] = []
    for day in _WEEK_ORDER:
        if day not in weekdays:
            continue
        previous = _WEEK_ORDER.index(day) - 1
        if runs and previous >= 0 and runs[-1][-1] == _WEEK_ORDER[previous]:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts: list[str] = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{_DAY_NAMES[run[0]]} through {_DAY_NAMES[run[-1]]}")
        else:
            parts.extend(_DAY_NAMES[day] for day in run)
    return parts
