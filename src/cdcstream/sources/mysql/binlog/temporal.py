"""Dates and times of row images, decoded from the binlog's packed forms straight to the server's text (no
``datetime`` objects on the hot path): DATE, DATETIME(2), TIMESTAMP(2), TIME(2) and YEAR.

``TIME`` is MySQL's packed integer with its sign handled on the whole value, so ``-01:01:01.000001`` stays so.
Dates the calendar cannot hold (a zero month or day, ``2020-02-31`` under ``ALLOW_INVALID_DATES``, all-zero
values) are the server's own text (``0001-00-00``, ``0000-00-00 14:02:10``), or null where the caller asks
(``invalid_dates = "null"``). A zero TIMESTAMP is ``0000-00-00 00:00:00`` likewise. Each factory returns a
:data:`~cdcstream.sources.mysql.binlog.values.Decoder`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cdcstream.sources.mysql import rows as types

Decoder = Callable[[bytes, int], tuple[Any, int]]


def _valid_date(year: int, month: int, day: int) -> bool:
    return 1 <= month <= 12 and day >= 1 and types.valid_day(year, month, day)


def _fraction(micro: int, fsp: int) -> str:
    return "." + f"{micro:06d}"[:fsp] if fsp else ""


def year_value(buf: bytes, pos: int) -> tuple[Any, int]:
    v = buf[pos]
    return (v + 1900 if v else 0), pos + 1


def date(null_invalid: bool) -> Decoder:
    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        v = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        year, month, day = v >> 9, (v >> 5) & 15, v & 31
        if null_invalid and not _valid_date(year, month, day):
            return None, pos + 3
        return f"{year:04d}-{month:02d}-{day:02d}", pos + 3

    return dec


def _datetime_text(year: int, month: int, day: int, hour: int, minute: int, second: int, frac: str) -> str:
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{frac}"


def _invalid_datetime_text(year: int, month: int, day: int, hour: int, minute: int, second: int, frac: str) -> str:
    return f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}{frac}"


def datetime2(fsp: int, null_invalid: bool) -> Decoder:
    """Formatted straight from the packed integer (no ``datetime`` object). The stored fraction has 2, 4 or 6
    digits (fsp 1-2, 3-4, 5-6): its text is cut to fsp digits."""
    nfrac = (fsp + 1) // 2
    size = 5 + nfrac
    digits = 2 * nfrac
    valid_day = types.valid_day
    seconds: dict[int, str] = {}  # the text of recent whole seconds: rows written together share them

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        packed = int.from_bytes(buf[pos : pos + 5], "big")
        frac = f".{int.from_bytes(buf[pos + 5 : pos + size], 'big'):0{digits}d}"[: fsp + 1] if nfrac else ""
        text = seconds.get(packed)
        if text is not None:
            return text + frac, pos + size
        v = packed - 0x8000000000
        ymd, hms = v >> 17, v & 0x1FFFF
        ym = ymd >> 5
        year, month, day = ym // 13, ym % 13, ymd & 31
        hour, minute, second = hms >> 12, (hms >> 6) & 63, hms & 63
        if (
            v >= 0
            and 0 < month <= 12
            and day
            and (day <= 28 or valid_day(year, month, day))
            and hour < 24
            and minute < 60
            and second < 60
        ):
            if len(seconds) >= 4096:
                seconds.clear()
            text = seconds[packed] = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
            return text + frac, pos + size
        if null_invalid:
            return None, pos + size
        return _invalid_datetime_text(year, month, day, hour, minute, second, frac), pos + size

    return dec


def datetime_v1(null_invalid: bool) -> Decoder:
    """The pre-5.6.4 DATETIME: an 8-byte little-endian integer YYYYMMDDhhmmss."""

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        v = int.from_bytes(buf[pos : pos + 8], "little")
        d, t = divmod(v, 1_000_000)
        year, rest = divmod(d, 10_000)
        month, day = divmod(rest, 100)
        hour, rest = divmod(t, 10_000)
        minute, second = divmod(rest, 100)
        if _valid_date(year, month, day) and hour < 24 and minute < 60 and second < 60:
            return _datetime_text(year, month, day, hour, minute, second, ""), pos + 8
        if null_invalid:
            return None, pos + 8
        return _invalid_datetime_text(year, month, day, hour, minute, second, ""), pos + 8

    return dec


def timestamp2(fsp: int, null_invalid: bool, v1: bool = False) -> Decoder:
    """TIMESTAMP: seconds since the epoch (big-endian; little-endian in the pre-5.6.4 form), then the fraction
    with 2, 4 or 6 digits. 0 is the zero TIMESTAMP ``0000-00-00 00:00:00`` (the range starts at 1970-01-01
    00:00:01 UTC), not an instant."""
    nfrac = (fsp + 1) // 2
    size = 4 + nfrac
    digits = 2 * nfrac
    order: Any = "little" if v1 else "big"
    seconds: dict[int, str] = {}  # the text of recent seconds: rows written together share them

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        sec = int.from_bytes(buf[pos : pos + 4], order)
        frac = f".{int.from_bytes(buf[pos + 4 : pos + size], 'big'):0{digits}d}"[: fsp + 1] if nfrac else ""
        if sec == 0:
            return (None if null_invalid else "0000-00-00 00:00:00" + frac), pos + size
        text = seconds.get(sec)
        if text is None:
            if len(seconds) >= 4096:
                seconds.clear()
            dt = datetime.fromtimestamp(sec, UTC)
            text = seconds[sec] = _datetime_text(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, "")
        return text + frac + "Z", pos + size

    return dec


def _time_text(negative: bool, hours: int, minutes: int, seconds: int, micro: int, fsp: int) -> str:
    return f"{'-' if negative else ''}{hours:02d}:{minutes:02d}:{seconds:02d}{_fraction(micro, fsp)}"


def time2(fsp: int) -> Decoder:
    """MySQL's TIME2 (``my_time_packed_from_binary``): a packed integer ``(hms << 24) + microseconds`` whose sign
    is the value's; the stored fraction of a negative value is its complement, hence the carry below."""
    size = 3 + (fsp + 1) // 2

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        intpart = int.from_bytes(buf[pos : pos + 3], "big") - 0x800000
        if fsp in (1, 2):
            frac = buf[pos + 3]
            if intpart < 0 and frac:
                intpart += 1
                frac -= 0x100
            packed = (intpart << 24) + frac * 10_000
        elif fsp in (3, 4):
            frac = int.from_bytes(buf[pos + 3 : pos + 5], "big")
            if intpart < 0 and frac:
                intpart += 1
                frac -= 0x10000
            packed = (intpart << 24) + frac * 100
        elif fsp in (5, 6):
            packed = int.from_bytes(buf[pos : pos + 6], "big") - 0x800000000000
        else:
            packed = intpart << 24
        negative = packed < 0
        packed = -packed if negative else packed
        hms, micro = packed >> 24, packed & 0xFFFFFF
        return _time_text(negative, (hms >> 12) & 0x3FF, (hms >> 6) & 63, hms & 63, micro, fsp), pos + size

    return dec


def time_v1(buf: bytes, pos: int) -> tuple[Any, int]:
    """The pre-5.6.4 TIME: a 3-byte signed little-endian integer (-)HHMMSS."""
    v = int.from_bytes(buf[pos : pos + 3], "little", signed=True)
    negative, v = v < 0, abs(v)
    hours, rest = divmod(v, 10_000)
    minutes, seconds = divmod(rest, 100)
    return _time_text(negative, hours, minutes, seconds, 0, 0), pos + 3
