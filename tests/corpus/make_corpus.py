"""The adversarial corpus: real sample files damaged the way real files get damaged, and
experiment files and command lines a user gets wrong.  Generated, never checked in.

    python tests/corpus/make_corpus.py OUT_DIR [SHARED_DATA_DIR]

writes the damaged files into OUT_DIR and prints one line per case.  :func:`build` returns the
cases; ``tests/test_corpus.py`` runs each through the command line and checks its outcome:

* ``error``: exit status 2 and one ``error:`` line naming the file and the line, row or key;
* ``repair``: exit status 0 and a ``warning:`` line naming the file (and line or row) and the
  documented repair.

Classes (``Case.klass``): ``timestamps`` (one bad timestamp, and many), ``stale`` (inputs that
stop early, a latency file of another day, no exchange times, a stray price, a duplicated line),
``yaml`` (experiment files), ``cli`` (option values).  Run folders and the exact engine's limits
need runs; their cases are in the tests themselves, from :func:`experiment` here.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import re
import sys
from pathlib import Path

import numpy as np

YEARS_6_NS = 6 * 365 * 86_400 * 10**9
DAY_NS = 86_400 * 10**9
BASE_LINES = 3000  # of the real USD-M capture: its REST snapshot is line 55; ~12 s of market
TARDIS_LINES = 2000


@dataclasses.dataclass(frozen=True)
class Case:
    """One damaged input or misuse.

    Attributes:
        name: unique, short.
        klass: the class of damage (module docstring).
        argv: the ``mmsweep`` arguments that meet it.
        outcome: ``error`` or ``repair``.
        where: regex the message must match: the file and its line/row/key.
        says: regex the message must match: what is wrong or what was repaired.
    """

    name: str
    klass: str
    argv: tuple[str, ...]
    outcome: str
    where: str
    says: str


def _q(path: Path) -> str:
    return re.escape(str(path))


# --------------------------------------------------------------------------------------------
# Binance capture


def _binance_lines(shared: Path) -> list[str]:
    with gzip.open(shared / "binance" / "usdm" / "btcusdt_20240808.gz", "rt") as fh:
        return [next(fh).rstrip("\n") for _ in range(BASE_LINES)]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _shift_local(line: str, ns: int) -> str:
    return f"{int(line[:19]) + ns}{line[19:]}"


def _set_field(line: str, field: str, value: str) -> str:
    return re.sub(rf'"{field}":(\d+)', f'"{field}":{value}', line, count=1)


def _binance_cases(out: Path, shared: Path) -> list[Case]:
    lines = _binance_lines(shared)
    trades = [i for i, line in enumerate(lines) if '"e":"trade"' in line and i > 60]
    tickers = [i for i, line in enumerate(lines) if '"e":"bookTicker"' in line and i > 60]
    t, k = trades[20], tickers[1000]
    cases = []

    def damaged(name: str, edit, *, klass: str, outcome: str, line: int, says: str, argv=("data", "inspect")) -> None:
        path = _write_lines(out / f"{name}.txt", edit(list(lines)))
        cases.append(Case(name, klass, (*argv, str(path)), outcome, rf"{_q(path)} \(line {line}\)", says))

    def at(i: int, f):
        def edit(ls):
            ls[i] = f(ls[i])
            return ls
        return edit

    ms = lambda m: str(int(m))  # noqa: E731
    trade_T = int(re.search(r'"T":(\d+)', lines[t]).group(1))
    damaged("bn_exch_years_ahead", at(t, lambda s: _set_field(s, "T", ms(trade_T + YEARS_6_NS // 10**6))),
            klass="timestamps", outcome="repair", line=t + 1, says="line dropped, an implausible timestamp")
    damaged("bn_exch_zero", at(t, lambda s: _set_field(s, "T", "0")), klass="timestamps", outcome="repair",
            line=t + 1, says="not milliseconds since the epoch")
    damaged("bn_local_spike", at(k, lambda s: _shift_local(s, YEARS_6_NS)), klass="timestamps",
            outcome="repair", line=k + 1, says="ahead of the lines around it")
    damaged("bn_local_dip", at(k, lambda s: _shift_local(s, -YEARS_6_NS)), klass="timestamps",
            outcome="repair", line=k + 1, says="goes back by")
    damaged("bn_last_line_years_ahead", at(len(lines) - 1, lambda s: _shift_local(s, YEARS_6_NS)),
            klass="timestamps", outcome="repair", line=len(lines), says="line dropped, an implausible timestamp")
    damaged("bn_local_20_digits", at(k, lambda s: "1" + s), klass="timestamps", outcome="error", line=k + 1,
            says="19-digit local receive timestamp")

    def many(ls):  # a tenth of the trades a day off: a clock or unit problem, not a stray line
        for i in trades[::10]:
            ls[i] = _set_field(ls[i], "T", ms(int(re.search(r'"T":(\d+)', ls[i]).group(1)) + DAY_NS // 10**6))
        return ls

    damaged("bn_many_bad_timestamps", many, klass="timestamps", outcome="error", line=trades[0] + 1,
            says="lines have an implausible timestamp")

    def dup(ls):
        ls.insert(t + 1, ls[t])
        return ls

    damaged("bn_duplicated_trade_line", dup, klass="stale", outcome="repair", line=t + 2,
            says=rf"duplicated trade line.*first seen at line {t + 1}")
    damaged("bn_price_off_grid", at(t, lambda s: re.sub(r'"p":"(\d+\.\d)0"', r'"p":"\g<1>5"', s)), klass="stale",
            outcome="repair", line=t + 1, says="off the 0.1 tick grid")
    with gzip.open(shared / "binance" / "spot" / "btcusdt_20240808.gz", "rt") as fh:
        spot = [next(fh).rstrip("\n") for _ in range(BASE_LINES)]
    last = max(i for i, line in enumerate(spot) if '@bookTicker"' in line)  # spot tickers carry no exchange time
    spot.append(_shift_local(spot[last], YEARS_6_NS))
    path = _write_lines(out / "bn_spot_last_ticker_years_ahead.txt", spot)
    cases.append(Case("bn_spot_last_ticker_years_ahead", "timestamps", ("data", "inspect", str(path)), "repair",
                      rf"{_q(path)} \(line {len(spot)}\)", "h after the rest of the capture"))
    base = _write_lines(out / "bn_base.txt", list(lines))
    cases.append(Case("bn_grid_too_large", "timestamps",
                      ("data", "frames", str(base), "--interval-ms", "0.000001"), "error", _q(base),
                      r"decision grid \(.* rows.*would need about .* GiB"))
    return cases


# --------------------------------------------------------------------------------------------
# Tardis CSV


def _tardis_cases(out: Path, shared: Path) -> list[Case]:
    tardis = shared / "tardis"
    trades_path = tardis / "binance-futures_trades_2020-02-22_BTCUSDT.csv"
    quotes_path = tardis / "binance-futures_quotes_2020-02-22_BTCUSDT.csv"
    rows = trades_path.read_text().splitlines()[:TARDIS_LINES]
    cases = []

    def damaged(name: str, i: int, column: int, value, *, says: str, outcome: str = "repair") -> None:
        ls = list(rows)
        cells = ls[i].split(",")
        cells[column] = str(value(int(cells[column])))
        ls[i] = ",".join(cells)
        path = _write_lines(out / f"{name}.csv", ls)
        cases.append(Case(name, "timestamps", ("data", "inspect", str(path)), outcome,
                          rf"{_q(path)} \(line {i + 1}\)", says))

    us6y = YEARS_6_NS // 1000
    damaged("td_exch_years_ahead", 500, 2, lambda v: v + us6y, says="line dropped, an implausible timestamp")
    damaged("td_local_spike", 800, 3, lambda v: v + us6y, says="off the timeline")
    damaged("td_timestamp_zero", 900, 2, lambda v: 0, says="not in microseconds since the epoch")
    off = list(rows)
    cells = off[700].split(",")
    cells[6] = f"{float(cells[6]) + 0.005:.3f}"  # a third decimal: off the 0.01 grid
    off[700] = ",".join(cells)
    path = _write_lines(out / "td_price_off_grid.csv", off)
    cases.append(Case("td_price_off_grid", "stale", ("data", "inspect", str(path)), "repair",
                      rf"{_q(path)} \(line 701\)", "off the 0.01 tick grid"))
    # The README's own example: quotes cover 3.8 minutes, trades 2 hours.
    cases.append(Case("td_quotes_stop_early", "stale", ("data", "frames", str(trades_path), str(quotes_path)),
                      "repair", _q(quotes_path), r"cover .* of the merged .*stale"))
    cases.append(Case("td_quotes_stop_early_frames_flag", "stale",
                      ("data", "frames", str(trades_path), str(quotes_path)), "repair", _q(trades_path),
                      r"quoted book has not changed for more than 60 s at .* decision rows"))
    cases.append(Case("td_quotes_stop_early_on_stale_error", "stale",
                      ("data", "frames", str(trades_path), str(quotes_path), "--on-stale", "error"), "error",
                      _q(trades_path), r"quoted book has not changed .*on_stale: error"))
    return cases


# --------------------------------------------------------------------------------------------
# hftbacktest npz (built from the Binance base capture: small, and its twins stay whole)


def _hft_records(shared: Path, out: Path) -> np.ndarray:
    import warnings

    from mmsweep.sweep.data.binance import read_binance
    from mmsweep.sweep.data.hftnpz import BUY_EVENT, EXCH_EVENT, HFT_EVENT_DTYPE, LOCAL_EVENT, SELL_EVENT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = read_binance(_write_lines(out / "npz_source.txt", _binance_lines(shared)), include_bbo=False)
    t = events.table
    rec = np.zeros(len(t), HFT_EVENT_DTYPE)
    side = np.where(t["side"] > 0, BUY_EVENT, np.where(t["side"] < 0, SELL_EVENT, 0)).astype(np.uint64)
    rec["ev"] = t["kind"].astype(np.uint64) | np.uint64(EXCH_EVENT | LOCAL_EVENT) | side
    rec["exch_ts"], rec["local_ts"], rec["px"], rec["qty"] = t["exch_ts"], t["local_ts"], t["price"], t["qty"]
    return rec


def _npz_cases(out: Path, shared: Path) -> list[Case]:
    rec = _hft_records(shared, out)
    depth_rows = np.flatnonzero((rec["ev"] & np.uint64(0xFF)) == 1)
    r = int(depth_rows[len(depth_rows) // 2])
    cases = []

    def damaged(name: str, edit, *, klass: str, outcome: str, where: str, says: str, argv=("data", "inspect")):
        data = rec.copy()
        edit(data)
        path = out / f"{name}.npz"
        np.savez(path, data=data)
        cases.append(Case(name, klass, (*argv, str(path)), outcome, _q(path) + where, says))

    def set_row(field, value):
        def edit(d):
            d[field][r] = value(d[field][r])
        return edit

    damaged("npz_exch_zero_one_row", set_row("exch_ts", lambda v: 0), klass="timestamps", outcome="repair",
            where=rf" \(row {r}\)", says="row dropped, an implausible timestamp")
    damaged("npz_local_spike_row", set_row("local_ts", lambda v: v + YEARS_6_NS), klass="timestamps",
            outcome="repair", where=rf" \(row {r}\)", says="off the timeline")

    def all_zero(d):
        d["exch_ts"] = 0

    damaged("npz_exch_zero_every_row", all_zero, klass="stale", outcome="error", where=r" \(row 0\)",
            says="exch_ts is 0 on every row")
    damaged("npz_price_off_grid", set_row("px", lambda v: v + 0.05), klass="stale", outcome="repair",
            where=rf" \(row {r}\)", says="off the 0.1 tick grid")

    latency = np.load(shared / "hftbacktest" / "usdm" / "btcusdt_20240808_order_latency.npz")["data"].copy()
    for field in ("req_ts", "exch_ts", "resp_ts"):
        latency[field] += DAY_NS
    lat_path = out / "latency_next_day.npz"
    np.savez(lat_path, data=latency)
    data_path = shared / "hftbacktest" / "usdm" / "btcusdt_20240808.npz"
    cases.append(Case("latency_file_other_day", "stale",
                      ("data", "frames", str(data_path), "--latency-file", str(lat_path)), "error", _q(lat_path),
                      r"order-latency rows cover .* another day"))
    return cases


# --------------------------------------------------------------------------------------------
# Experiments and the command line


def experiment(name: str, out_root: Path, data: Path | None = None, **changes) -> dict:
    """A small experiment (the demo's structure): synthetic 0.01 h, or ``data`` (a capture) as
    the quoted instrument; 8 lanes in chunks of 2.  ``changes`` override top-level keys."""
    spec: dict = {
        "name": name,
        "data": ({"source": "synthetic", "synthetic": {"hours": 0.01, "seed": 3}} if data is None else
                 {"source": "files", "files": {"futures": {"path": str(data)}}}),
        "interval_ms": 100,
        "latency": {"entry_ms": 10},
        "fees": {"maker_bps": -0.5, "taker_bps": 7.0},
        "strategy": {"policy": "grid", "params": {"n_levels": 3, "order_qty": 0.01, "max_position": 0.1}},
        "sweep": {"half_spread": {"list": [1, 2]}, "skew": {"list": [0.0, 0.5]}, "grid_interval": {"list": [1, 2]}},
        "objective": {"metric": "PnL"},
        "run": {"chunk_lanes": 2, "dtype": "float32", "out": str(out_root)},
    }
    spec.update(changes)
    return spec


def _yaml_cases(out: Path, shared: Path) -> list[Case]:
    import yaml

    base = _write_lines(out / "exp_data.txt", _binance_lines(shared))
    good = yaml.safe_dump(experiment("corpus", out / "runs", base), sort_keys=False)
    cases = []

    def exp_file(name: str, text: str, *, where: str, says: str, names_data: bool = False) -> None:
        """``names_data``: found when the data are read, so the error names the data file."""
        path = out / f"{name}.yaml"
        path.write_text(text)
        cases.append(Case(name, "yaml", ("run", str(path)), "error", (_q(base) if names_data else _q(path)) + where,
                          says))

    bomb = "anchors:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"  a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}]\n" for i in range(1, 12))
    exp_file("yaml_alias_bomb", bomb + good, where=r" \(line \d+\)", says="expands to more than")
    exp_file("yaml_deep_flow", good + "description: " + "[" * 20_000 + "]" * 20_000 + "\n",
             where=r" \(line \d+\)", says="nesting deeper than")
    exp_file("yaml_deep_block", "".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "x: 1\n",
             where=r" \(line \d+\)", says="nesting deeper than")
    exp_file("yaml_interval_1ns", good.replace("interval_ms: 100", "interval_ms: 0.000001"), where="",
             says="decision grid .*would need about .* GiB", names_data=True)
    exp_file("yaml_interval_nan", good.replace("interval_ms: 100", "interval_ms: .nan"),
             where=r" \(line \d+, key 'interval_ms'\)", says="finite number")
    exp_file("yaml_interval_inf", good.replace("interval_ms: 100", "interval_ms: .inf"),
             where=r" \(line \d+, key 'interval_ms'\)", says="finite number")
    exp_file("yaml_latency_huge", good.replace("entry_ms: 10", "entry_ms: 1.0e+300"),
             where=r" \(line \d+, key 'latency.entry_ms'\)", says="<= 60000")
    exp_file("yaml_train_end_huge", good + "split: {train_end_ms: 100000000000000000000000000000}\n",
             where=r" \(line \d+, key 'split.train_end_ms'\)", says="not ms since the Unix epoch")
    exp_file("yaml_feature_lag_huge", good + "features: [{kind: mid_return, lag_s: 1.0e+300}]\n",
             where=r" \(line \d+, key 'features\[0\].lag_s'\)", says="up to a year")
    exp_file("yaml_feature_levels_huge", good + "features: [{kind: imbalance, levels: 1000000000}]\n",
             where=r" \(line \d+, key 'features\[0\].levels'\)", says="from 1 to 1000")
    exp_file("yaml_fee_huge", good.replace("maker_bps: -0.5", "maker_bps: 1.0e+300"),
             where=r" \(line \d+, key 'fees.maker_bps'\)", says="<= 1000")
    exp_file("yaml_tick_size_tiny", good.replace(f"path: {base}", f"path: {base}\n      tick_size: 1.0e-300"),
             where=r" \(key 'tick_size'\)", says="ticks of 1e-300", names_data=True)
    latin1 = out / "yaml_not_utf8.yaml"
    latin1.write_bytes(good.encode() + b"description: caf\xe9\n")
    cases.append(Case("yaml_not_utf8", "yaml", ("run", str(latin1)), "error", _q(latin1),
                      "cannot read the experiment"))
    big = out / "yaml_too_large.yaml"
    with open(big, "wb") as fh:
        fh.write(good.encode())
        fh.write(b"#" + b"x" * (33 << 20) + b"\n")
    cases.append(Case("yaml_too_large", "yaml", ("run", str(big)), "error", _q(big), "at most 32 MiB"))
    return cases


def _cli_cases(out: Path, shared: Path) -> list[Case]:
    base = _write_lines(out / "cli_data.txt", _binance_lines(shared)[:400])
    frames = ("data", "frames", str(base))
    cases = []
    for option, value, args in (("--interval-ms", "nan", frames), ("--interval-ms", "inf", frames),
                                ("--interval-ms", "-5", frames), ("--latency-ms", "inf", frames),
                                ("--latency-ms", "1e9", frames), ("--tick-size", "nan", frames),
                                ("--lot-size", "-inf", frames), ("--stale-after-s", "nan", frames),
                                ("--hours", "inf", ("data", "synth", "-o", str(out / "synth"))),
                                ("--hours", "nan", ("demo",)),
                                ("--lead-lag-ms", "nan", ("data", "synth", "-o", str(out / "synth")))):
        cases.append(Case(f"cli{option.replace('-', '_')}_{value}", "cli", (*args, option, value), "error",
                          re.escape(option), "must be a finite number"))
    cases.append(Case("cli_feature_nan", "cli", (*frames, "--feature", "mid_return:lag_s=nan"), "error",
                      "--feature", "must be a finite number"))
    cases.append(Case("cli_feature_lag_huge", "cli", (*frames, "--feature", "mid_return:lag_s=1e300"), "error",
                      r"key '--feature.lag_s'", "up to a year"))
    return cases


def build(out: Path, shared: Path) -> list[Case]:
    """Write the damaged files into ``out`` and return every case."""
    out.mkdir(parents=True, exist_ok=True)
    cases = (_binance_cases(out, shared) + _tardis_cases(out, shared) + _npz_cases(out, shared)
             + _yaml_cases(out, shared) + _cli_cases(out, shared))
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    (out / "cases.json").write_text(json.dumps([dataclasses.asdict(c) for c in cases], indent=1))
    return cases


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    root = Path(__file__).resolve().parents[2]
    shared_dir = Path(sys.argv[2]) if len(sys.argv) == 3 else root.parent / "shared" / "data"
    for case in build(Path(sys.argv[1]), shared_dir):
        print(f"{case.klass:<11} {case.outcome:<7} {case.name:<36} mmsweep {' '.join(case.argv)[:100]}")
