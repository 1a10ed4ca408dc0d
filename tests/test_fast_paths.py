"""The one-pass (numba) helpers of the frame builder and the event validator against their plain
numpy definitions, on random tables: same ticks, same cuts, same book times, same first error."""
from __future__ import annotations

import numpy as np
import pytest

from mmsweep.replay.book import price_to_ticks
from mmsweep.sweep.data.book import book_change_times, cut_candidates
from mmsweep.sweep.data.events import BBO, CLEAR, DEPTH, SNAPSHOT, TRADE, make_table, validate_events
from mmsweep.sweep.errors import InputError


def _ticks_numpy(price, tick):
    scaled = price / tick
    return (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)).astype(np.int64)


@pytest.mark.parametrize("tick", [0.1, 0.01, 0.5, 1e-5, 7.0])
def test_price_to_ticks_matches_the_numpy_rounding(tick):
    rng = np.random.default_rng(3)
    k = rng.integers(-10**6, 10**6, 20_000)
    # exact ticks, exact halves (rounded away from zero) and arbitrary prices
    price = np.concatenate([k * tick, (k + 0.5) * tick, rng.normal(0, 1e4, 20_000), [0.0, -0.0]])
    got = price_to_ticks(price, tick)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, _ticks_numpy(price, tick))
    assert price_to_ticks(np.array([0.25, -0.25]), 0.5).tolist() == [1, -1]  # halves away from zero


def _random_table(rng, n, sorted_exch):
    local = np.cumsum(rng.integers(0, 3, n))  # ties included
    exch = local - rng.integers(0, 5 if not sorted_exch else 1, n)
    kinds = rng.choice([DEPTH, TRADE, CLEAR, SNAPSHOT, BBO], n)
    return local, exch, kinds.astype(np.uint8)


def _cuts_numpy(local, exch, kinds, hi, has_depth, exch_too, limit):
    n = len(local)
    k = np.arange(1, min(hi, n - 1) + 1)
    book = (kinds == DEPTH) | (kinds == SNAPSHOT) | (kinds == CLEAR) if has_depth else (kinds == BBO) | (kinds == CLEAR)
    ok = (local[k] > local[k - 1]) & book[k - 1]
    if exch_too:
        ok &= np.maximum.accumulate(exch)[k - 1] < np.minimum.accumulate(exch[::-1])[::-1][k]
    return k[ok][::-1][:limit]


@pytest.mark.parametrize("seed", range(6))
def test_cut_candidates_match_their_definition(seed):
    rng = np.random.default_rng(seed)
    local, exch, kinds = _random_table(rng, 3_000, sorted_exch=seed % 2 == 0)
    for hi in (0, 1, 2, 50, 1_500, 2_999, 3_000, 10_000):
        for has_depth in (True, False):
            for exch_too in (True, False):
                for limit in (1, 64, 10_000):
                    got = cut_candidates(local, exch, kinds, hi, has_depth, exch_too, limit)
                    want = _cuts_numpy(local, exch, kinds, hi, has_depth, exch_too, limit)
                    np.testing.assert_array_equal(got, want, err_msg=f"hi={hi} {has_depth} {exch_too} {limit}")


@pytest.mark.parametrize("has_depth", [True, False])
def test_book_change_times_match_mask_and_sort(has_depth):
    rng = np.random.default_rng(11)
    local, _, kinds = _random_table(rng, 5_000, True)
    book = (kinds == DEPTH) | (kinds == SNAPSHOT) | (kinds == CLEAR) if has_depth else (kinds == BBO) | (kinds == CLEAR)
    np.testing.assert_array_equal(book_change_times(kinds, local, has_depth), np.sort(local[book]))
    shuffled = rng.permutation(local)  # an unsorted clock is sorted
    np.testing.assert_array_equal(book_change_times(kinds, shuffled, has_depth), np.sort(shuffled[book]))


def _first_error_numpy(t):
    """The validator's checks, in order, as numpy masks: (message start, row) or None."""
    kinds, side, price, qty = t["kind"], t["side"], t["price"], t["qty"]
    checks = [
        ("unknown event kind", ~np.isin(kinds, [DEPTH, TRADE, CLEAR, SNAPSHOT, BBO])),
        ("side must be", ~np.isin(side, (-1, 0, 1))),
        ("price must be", (kinds != CLEAR) & ~(np.isfinite(price) & (price > 0))),
        ("quantity must be", ~np.isfinite(qty) | (qty < 0)),
        ("book rows need a side", ((kinds == DEPTH) | (kinds == SNAPSHOT) | (kinds == BBO)) & (side == 0)),
        ("local_ts not sorted", np.append(np.diff(t["local_ts"]) < 0, False)),
        ("local_ts earlier than exch_ts", t["local_ts"] < t["exch_ts"]),
    ]
    for what, mask in checks:
        if mask.any():
            return what, int(np.argmax(mask))
    return None


@pytest.mark.parametrize("seed", range(40))
def test_validator_reports_the_first_error_of_the_first_failing_check(seed):
    rng = np.random.default_rng(seed)
    n = 400
    local = np.cumsum(rng.integers(0, 3, n)) + 10
    t = make_table(kind=rng.choice([DEPTH, TRADE, SNAPSHOT, BBO], n), side=rng.choice([-1, 1], n),
                   price=rng.uniform(1, 2, n), qty=rng.uniform(0, 1, n), local_ts=local, exch_ts=local - 5)
    # damage a few random rows in a few random ways
    for _ in range(rng.integers(0, 4)):
        row = int(rng.integers(n))
        how = int(rng.integers(7))
        if how == 0:
            t["kind"][row] = 9
        elif how == 1:
            t["side"][row] = 2
        elif how == 2:
            t["price"][row] = [np.nan, -1.0, np.inf][int(rng.integers(3))]
        elif how == 3:
            t["qty"][row] = [np.nan, -0.5][int(rng.integers(2))]
        elif how == 4:
            t["side"][row] = 0
            t["kind"][row] = DEPTH
        elif how == 5:
            t["local_ts"][row] = 0
        else:
            t["exch_ts"][row] = t["local_ts"][row] + 1
    want = _first_error_numpy(t)
    if want is None:
        validate_events(t)
        return
    with pytest.raises(InputError) as exc:
        validate_events(t)
    assert exc.value.row == want[1]
    assert want[0] in str(exc.value)
