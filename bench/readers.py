"""Reader throughput: mmsweep's readers beside hftbacktest's own converters on the same files.

Not a test.  Run from the repository root:

    python bench/readers.py [--repeat 5] [--synthetic-rows 1000000]

Each reader runs ``--repeat`` times (ours and hftbacktest's taking turns) on the real samples in ``../shared/data`` (or
``$MMSWEEP_SHARED_DATA``); the table shows the first (cold: numba compile, file cache) and the
best wall time in seconds, output rows per second from the best run, and the ratio
hftbacktest-best / ours-best (> 1: ours is faster).  The outputs differ in kind (ours: one row per
event, with BBO rows where the source has them; hftbacktest: EXCH/LOCAL split rows, no BBO), so
row counts are shown for both.  Our readers get tick and lot (so they check every price against
the tick, but infer nothing), as hftbacktest's converters neither infer nor check them.

Pairs:
* Binance USD-M capture (.gz): ``read_binance`` vs ``hftbacktest.data.utils.binancefutures.convert``.
* hftbacktest .npz: ``read_hftbacktest_npz`` vs ``np.load(...)["data"]`` (all hftbacktest does
  with an npz is load it; no conversion).
* Tardis trades CSV: ``read_tardis`` vs ``hftbacktest.data.utils.tardis.convert([trades])``.
* Tardis trades + quotes: ``read_tardis`` only (hftbacktest's ``convert`` refuses book_ticker
  files and ``convert_fuse`` needs an incremental_book_L2 file, which this sample lacks).
* ``--synthetic-rows N`` (default 1,000,000; 0 skips): a generated incremental_book_L2 CSV of N rows,
  ``read_tardis`` vs ``tardis.convert`` -- the real Tardis samples are too small (10k rows) to
  measure throughput rather than fixed overhead.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    path = Path(os.environ.get("MMSWEEP_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        sys.exit(f"shared data not found at {path}; set MMSWEEP_SHARED_DATA")
    return path


def _call(fn) -> tuple[float, int]:
    """(wall s, output rows) of one call; hftbacktest's prints and our warnings are silenced."""
    gc.collect()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
    return wall, len(out)


def timed_pair(fns: list, repeat: int) -> list[tuple[float, float, int] | None]:
    """(first s, best s, rows) per callable (None stays None).  The callables take turns, so a
    busy machine slows both sides alike."""
    times: list[list[float]] = [[] for _ in fns]
    rows = [0] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            if fn is not None:
                wall, rows[i] = _call(fn)
                times[i].append(wall)
    return [(t[0], min(t), r) if fn is not None else None for fn, t, r in zip(fns, times, rows)]


def synthetic_l2(path: Path, n: int, seed: int = 0) -> None:
    """An incremental_book_L2 CSV: a 1,000-row start-of-day snapshot, then updates."""
    rng = np.random.default_rng(seed)
    ts = 1_600_000_000_000_000 + np.cumsum(rng.integers(0, 1000, n))
    snap = np.zeros(n, bool)
    snap[: min(1000, n)] = True
    side = np.where(rng.random(n) < 0.5, "bid", "ask")
    px = 10_000 + rng.integers(-500, 500, n) * 0.01
    amount = rng.integers(0, 1000, n) * 0.001
    with open(path, "w") as fh:
        fh.write("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n")
        fh.writelines(
            f"binance-futures,BTCUSDT,{t},{t + 150},{'true' if s else 'false'},{sd},{p:.2f},{a:.3f}\n"
            for t, s, sd, p, a in zip(ts.tolist(), snap.tolist(), side.tolist(), px.tolist(), amount.tolist())
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--synthetic-rows", type=int, default=1_000_000)
    args = ap.parse_args()

    from mmsweep.sweep.data.hftnpz import read_hftbacktest_npz
    from mmsweep.sweep.data.tardis import read_tardis

    try:
        from mmsweep.sweep.data.binance import read_binance
    except ImportError as exc:  # written in parallel; the row says so
        read_binance, binance_missing = None, str(exc)
    try:
        import hftbacktest
        from hftbacktest.data.utils import binancefutures as hbt_binance
        from hftbacktest.data.utils import tardis as hbt_tardis
        hbt_version = getattr(hftbacktest, "__version__", "?")
    except ImportError:
        hbt_binance = hbt_tardis = None
        hbt_version = "not installed"

    data = shared_data()
    usdm_gz = str(data / "binance/usdm/btcusdt_20240808.gz")
    usdm_npz = str(data / "hftbacktest/usdm/btcusdt_20240808.npz")
    trades = str(data / "tardis/binance-futures_trades_2020-02-22_BTCUSDT.csv")
    quotes = str(data / "tardis/binance-futures_quotes_2020-02-22_BTCUSDT.csv")

    cases = [
        ("Binance USD-M capture `usdm/btcusdt_20240808.gz`",
         ("read_binance", (lambda: read_binance(usdm_gz, tick_size=0.1, lot_size=0.001)) if read_binance else None),
         ("binancefutures.convert", (lambda: hbt_binance.convert(usdm_gz)) if hbt_binance else None)),
        ("hftbacktest npz `usdm/btcusdt_20240808.npz`",
         ("read_hftbacktest_npz", lambda: read_hftbacktest_npz(usdm_npz, tick_size=0.1, lot_size=0.001)),
         ("np.load(...)['data']", lambda: np.load(usdm_npz)["data"])),
        ("Tardis trades CSV (9,999 rows)",
         ("read_tardis", lambda: read_tardis(trades, tick_size=0.01, lot_size=0.001)),
         ("tardis.convert", (lambda: hbt_tardis.convert([trades])) if hbt_tardis else None)),
        ("Tardis trades + quotes CSV pair",
         ("read_tardis", lambda: read_tardis([trades, quotes], tick_size=0.01, lot_size=0.001)),
         ("(no converter for quotes)", None)),
    ]
    tmp = None
    if args.synthetic_rows > 0:
        tmp = tempfile.TemporaryDirectory()
        l2 = str(Path(tmp.name) / "synthetic_incremental_book_L2.csv")
        synthetic_l2(Path(l2), args.synthetic_rows)
        cases.append((f"synthetic incremental_book_L2 CSV ({args.synthetic_rows:,} rows)",
                      ("read_tardis", lambda: read_tardis(l2, tick_size=0.01, lot_size=0.001)),
                      ("tardis.convert", (lambda: hbt_tardis.convert([l2])) if hbt_tardis else None)))

    print(f"hftbacktest {hbt_version}, numpy {np.__version__}, {os.cpu_count()} CPUs, best of {args.repeat}\n")
    print("| input | ours | rows | first s | best s | rows/s | hftbacktest | rows | first s | best s | rows/s "
          "| hbt/ours |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for label, (our_name, ours), (hbt_name, theirs) in cases:
        cells = [label]
        results = timed_pair([ours, theirs], args.repeat)
        for (key, name), res in zip((("ours", our_name), ("hbt", hbt_name)), results):
            if res is None:
                why = binance_missing if (key == "ours" and read_binance is None and "Binance" in label) else ""
                cells += [f"{name} n/a {why}".strip(), "", "", "", ""]
                continue
            first, best, rows = res
            cells += [name, f"{rows:,}", f"{first:.3f}", f"{best:.3f}", f"{rows / best / 1e6:.2f} M"]
        both = all(r is not None for r in results)
        cells.append(f"{results[1][1] / results[0][1]:.2f}" if both else "")
        print("| " + " | ".join(cells) + " |", flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
