"""Property tests (hypothesis) for date, time and range parsing, and name folding."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera_common.qido_terms import match_value
from tessera_common.qido_values import (
    DT_WIDTH,
    TM_WIDTH,
    datetime_bounds,
    fold_name,
    name_tokens,
    parse_date,
    parse_offset,
    time_bounds,
    to_utc,
)

DATES = st.dates(min_value=date(1000, 1, 2), max_value=date(9999, 12, 30))
TIMES = st.times()
OFFSETS = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: m - m % 15)
DATETIMES = st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30))


def offset_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def full(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S.%f").zfill(21)


@given(DATES)
def test_date_round_trip(day: date) -> None:
    assert parse_date(day.strftime("%Y%m%d")) == day.strftime("%Y%m%d")
    assert parse_date(day.strftime("%Y.%m.%d"), lenient=True) == day.strftime("%Y%m%d")


@given(TIMES, st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=6))
def test_time_precision_is_an_interval_holding_the_time(
    moment: time, parts: int, digits: int
) -> None:
    text = moment.strftime("%H%M%S")[: 2 * min(parts, 3)]
    if parts == 4:
        text += "." + moment.strftime("%f")[:digits]
    low, high = time_bounds(text)
    assert len(low) == len(high) == TM_WIDTH
    exact = moment.strftime("%H%M%S.%f")
    if parts == 4:
        exact = text.ljust(TM_WIDTH, "0")
    assert low <= exact <= high
    assert low.startswith(text.split(".")[0])


@given(DATETIMES, st.integers(min_value=1, max_value=7), st.one_of(st.none(), OFFSETS))
def test_datetime_precision_is_an_interval(
    moment: datetime, parts: int, offset: int | None
) -> None:
    widths = [4, 6, 8, 10, 12, 14]
    text = moment.strftime("%Y%m%d%H%M%S")[: widths[min(parts, 6) - 1]]
    if parts == 7:
        text += "." + moment.strftime("%f")
    if offset is not None:
        text += offset_text(offset)
    low, high, zone = datetime_bounds(text)
    assert len(low) == len(high) == DT_WIDTH
    assert low <= full(moment) <= high or parts == 7
    assert zone == offset


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), OFFSETS)
def test_to_utc_is_datetime_arithmetic(moment: datetime, offset: int) -> None:
    expected = moment - timedelta(minutes=offset)
    assert to_utc(full(moment), offset) == full(expected)


@given(OFFSETS)
def test_offset_round_trip(minutes: int) -> None:
    assert parse_offset(offset_text(minutes)) == minutes


@given(DATES, DATES)
def test_date_range(first: date, second: date) -> None:
    text = f"{first:%Y%m%d}-{second:%Y%m%d}"
    if first > second:
        with pytest.raises(ValueError, match="impossible range"):
            match_value(0x00080020, "DA", text)
        return
    (term,) = match_value(0x00080020, "DA", text).terms
    assert (term.low, term.high) == (f"{first:%Y%m%d}", f"{second:%Y%m%d}")
    assert not term.zoned


@given(DATETIMES, DATETIMES, OFFSETS, OFFSETS)
def test_datetime_range_with_offsets_splits_at_the_right_dash(
    first: datetime, second: datetime, first_zone: int, second_zone: int
) -> None:
    """Negative offsets put '-' inside the values; the range is still read correctly."""
    text = (
        f"{first:%Y%m%d%H%M%S}{offset_text(first_zone)}-"
        f"{second:%Y%m%d%H%M%S}{offset_text(second_zone)}"
    )
    first_utc = first.replace(microsecond=0) - timedelta(minutes=first_zone)
    second_utc = second.replace(microsecond=0) - timedelta(minutes=second_zone)
    if first_utc > second_utc:
        with pytest.raises(ValueError, match="impossible range"):
            match_value(0x0008002A, "DT", text)
        return
    (term,) = match_value(0x0008002A, "DT", text).terms
    assert term.zoned
    assert term.utc_low == full(first_utc)
    assert term.utc_high == second_utc.strftime("%Y%m%d%H%M%S") + ".999999"


@given(DATES, OFFSETS)
def test_zoned_date_covers_the_local_day(day: date, zone: int) -> None:
    (term,) = match_value(0x00080020, "DA", f"{day:%Y%m%d}", timezone=zone).terms
    start = datetime.combine(day, time()) - timedelta(minutes=zone)
    assert term.utc_low == full(start)
    assert term.utc_high == full(start + timedelta(days=1, microseconds=-1))


@given(st.text(max_size=40))
def test_folding_is_idempotent(text: str) -> None:
    assert fold_name(fold_name(text)) == fold_name(text)
    tokens = name_tokens(text)
    assert all(tokens) and len(set(tokens)) == len(tokens)
    assert name_tokens(" ".join(tokens)) == tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Núñez^José María", ["nunez", "jose", "maria"]),
        ("Yamada^Tarou=山田^太郎", ["yamada", "tarou", "山田", "太郎"]),
        ("ﾔﾏﾀﾞ^ﾀﾛｳ", ["ヤマタ", "タロウ"]),
        ("홍^길동", ["홍", "길동"]),
        ("O'Brien-Smith^Ann", ["o", "brien", "smith", "ann"]),
    ],
)
def test_name_tokens(text: str, tokens: list[str]) -> None:
    assert name_tokens(text) == tokens
