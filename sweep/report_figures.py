"""Figures of ``mmsweep report`` and ``mmsweep show`` (PNG, matplotlib's Agg canvas).

Each function takes plain arrays and writes one PNG; units come in as text.  Legends sit
outside the data (below or beside the axes); long series are drawn as a per-pixel min/max band
with the bucket's last value on top, so a strategy that trades every interval stays readable.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from .report import _figure, _save

FAST = "#1f77b4"
EXACT = "#d62728"
TRAIN = "#1f77b4"
TEST = "#ff7f0e"
BUY = "#2ca02c"
SELL = "#d62728"
ALL = "#333333"
POSITION_BUCKETS = 400  # inventory points across a lane figure when the series is longer
COMPONENTS = (("spread_capture", "spread capture", "#2ca02c"), ("rebates_fees", "rebates (+) / fees (-)", "#9467bd"),
              ("inventory", "inventory mark-to-market", "#8c564b"))


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e5):
        return f"{v:.2e}"
    return f"{v:.3g}"


def _compact(v: float) -> str:
    """A short cell label: 3 significant digits, k/M for thousands/millions."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def _cell_power(largest: float) -> int:
    """The power of ten (a multiple of 3) that brings a panel's largest magnitude below 1 into
    [1, 1000), so that cells read ``314`` rather than ``0.000314`` (a coin's PnL); 0 from 1 up
    (:func:`_compact` writes thousands as k, millions as M)."""
    if not (np.isfinite(largest) and 0 < largest < 1):
        return 0
    return int(np.floor(np.log10(largest) / 3.0)) * 3


def envelope(x: np.ndarray, y: np.ndarray, buckets: int = 1500):
    """``(xb, lo, hi, last, mean)``: ``y`` reduced to ``buckets`` consecutive buckets (min, max,
    last and mean of each); the input itself when it is short enough."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(y) <= 2 * buckets:
        return x, y, y, y, y
    edges = np.linspace(0, len(y), buckets + 1).astype(np.int64)
    starts = edges[:-1]
    lo = np.minimum.reduceat(y, starts)
    hi = np.maximum.reduceat(y, starts)
    mean = np.add.reduceat(y, starts) / np.diff(edges)
    last = y[edges[1:] - 1]
    return x[edges[1:] - 1], lo, hi, last, mean


def _band(ax, x, y, color, label, ls="-", lw=1.2, step=False, alpha=0.25, buckets: int = 1500,
          center: str = "last"):
    """``y`` against ``x``; a long series as its min-max band per bucket plus the bucket's last
    value (``center="last"``) or mean (``"mean"``: readable for a position that flips every row)."""
    xb, lo, hi, last, mean = envelope(x, y, buckets)
    reduced = len(xb) < len(x)
    line = mean if reduced and center == "mean" else last
    if reduced:
        ax.fill_between(xb, lo, hi, color=color, alpha=alpha, lw=0, step="post" if step else None)
    if step and not reduced:
        ax.step(xb, line, where="post", color=color, lw=lw, ls=ls, label=label)
    else:
        ax.plot(xb, line, color=color, lw=lw, ls=ls, label=label)
    return reduced


def _tick_labels(labels: np.ndarray, max_shown: int = 12) -> tuple[np.ndarray, list[str]]:
    n = len(labels)
    every = max(1, int(np.ceil(n / max_shown)))
    pos = np.arange(0, n, every)
    return pos, [_fmt(float(labels[i])) for i in pos]


def heatmaps(path: str | os.PathLike, *, x_name: str, y_name: str, x_labels: np.ndarray, y_labels: np.ndarray,
             panels: Sequence[dict], metric_label: str, title: str, note: str, x_binned: bool = False,
             y_binned: bool = False) -> Path:
    """Objective maps over two axes, side by side.

    Args:
        panels: dicts with ``value`` [ny, nx] (NaN: no feasible lane, drawn grey), ``title``,
            ``markers``: list of ``(x level, y level, text, is_chosen)``: outlined cells, the
            chosen one in gold.
        metric_label: colour bar label (with units).
        note: a line under the figure (how the cells were chosen).
    """
    ny, nx = len(y_labels), len(x_labels)
    width = min(7.2, 2.2 + 0.32 * nx)
    fig = _figure(width * len(panels) + 0.8, min(6.8, 2.4 + 0.3 * ny) + 0.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    cmap = colormaps["RdBu"].with_extremes(bad="#d9d9d9")
    for ax, panel in zip(axes, panels):
        v = np.asarray(panel["value"], np.float64)
        finite = v[np.isfinite(v)]
        # Symmetric about 0 in every panel: blue gains, red losses, whatever the panel's range.
        m = float(np.max(np.abs(finite))) if finite.size and np.max(np.abs(finite)) > 0 else 1.0
        im = ax.imshow(np.ma.masked_invalid(v), origin="lower", aspect="auto", cmap=cmap, norm=Normalize(-m, m),
                       interpolation="nearest")
        cb = fig.colorbar(im, ax=ax, shrink=0.9)
        annotate = nx * ny <= 144
        power = _cell_power(m) if annotate else 0
        cb.set_label(metric_label + (f"\ncell values x 1e{power}" if power else ""))
        if annotate:
            for i in range(ny):
                for j in range(nx):
                    if np.isfinite(v[i, j]):
                        dark = abs(v[i, j]) > 0.6 * m
                        ax.text(j, i, _compact(v[i, j] / 10.0 ** power), ha="center", va="center", fontsize=6.5,
                                color="white" if dark else "black")
        for (j, i, text, chosen) in panel.get("markers", []):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="gold" if chosen else "black",
                                   lw=3.0 if chosen else 1.6, zorder=3))
            ax.text(j - 0.46, i + 0.46, text, ha="left", va="top", fontsize=6, fontweight="bold", zorder=4,
                    color="black", bbox={"boxstyle": "square,pad=0.05", "fc": "gold" if chosen else "white",
                                         "ec": "none"})
        pos, lab = _tick_labels(x_labels)
        ax.set_xticks(pos, lab, rotation=45, ha="right", fontsize=8)
        pos, lab = _tick_labels(y_labels)
        ax.set_yticks(pos, lab, fontsize=8)
        ax.set_xlabel(x_name + (" (bins, by median)" if x_binned else ""))
        ax.set_ylabel(y_name + (" (bins, by median)" if y_binned else ""))
        ax.set_title(panel["title"], fontsize=10.5)
    fig.suptitle(title, fontsize=12)
    fig.supxlabel(textwrap.fill(note, width=int(fig.get_figwidth() * 15)), fontsize=8, color="dimgray")
    return _save(fig, path)


def sensitivity(path: str | os.PathLike, panels: Sequence[dict], *, metric_label: str, title: str) -> Path:
    """The objective against each swept axis.

    Args:
        panels: dicts with ``name``, ``labels`` [levels], ``log`` (bool), ``importance`` (0..1),
            ``train_best``, ``train_median``, ``test_of_best``, ``test_median`` [levels] (the last
            two may be None: no test part).
    """
    n = len(panels)
    cols = min(3, n)
    rows = -(-n // cols)
    fig = _figure(5.0 * cols, 3.6 * rows + 1.0)
    axes = fig.subplots(rows, cols, squeeze=False)
    lines = {}
    for k, panel in enumerate(panels):
        ax = axes[k // cols, k % cols]
        x = np.asarray(panel["labels"], np.float64)
        series = [("train_best", TRAIN, "-", "o", "train: best over the other axes"),
                  ("train_median", TRAIN, "--", None, "train: median over the other axes"),
                  ("test_of_best", TEST, "-", "s", "test: the train-best lane of each value"),
                  ("test_median", TEST, "--", None, "test: median over the other axes")]
        for key, color, ls, marker, label in series:
            if panel.get(key) is not None:
                lines[label] = ax.plot(x, panel[key], color=color, ls=ls, marker=marker, ms=3.5, lw=1.4)[0]
        if panel.get("log"):
            ax.set_xscale("log")
        ax.axhline(0.0, color="black", lw=0.6, alpha=0.6)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(panel.get("axis_label", panel["name"]) + (" (bins, by median)" if panel.get("binned") else ""))
        if k % cols == 0:
            ax.set_ylabel(metric_label)
        ax.set_title(f"{panel['name']}\n{100 * panel['importance']:.0f} % of the train rank variance", fontsize=9)
    for k in range(n, rows * cols):
        axes[k // cols, k % cols].set_visible(False)
    fig.legend(list(lines.values()), list(lines.keys()), loc="outside lower center", ncol=min(4, len(lines)),
               fontsize=8.5, frameon=False)
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)


def lane_curves(path: str | os.PathLike, *, parts: Sequence[dict], quote: str, qty_unit: str, price_unit: str,
                title: str) -> Path:
    """Mid price, equity and inventory of one lane on one time axis, part after part.

    Args:
        parts: per part (in time order) dicts with ``name``, ``minutes`` [T] (minutes from the
            data's first decision), ``mid`` [T], ``fast_equity``, ``fast_position`` [T] and
            optionally ``exact_equity``, ``exact_position`` [T].  Each part starts flat.
        quote, qty_unit: units of equity and inventory.
        price_unit: the mid's unit (``USD per ETH``: an inverse contract's PnL is in the coin, its
            prices are not).
    """
    fig = _figure(13.0, 8.6)
    ax_mid, ax_eq, ax_pos = fig.subplots(3, 1, sharex=True, height_ratios=(1.0, 1.5, 1.2))
    handles = {}
    total_rows = sum(len(p["minutes"]) for p in parts)
    # A position that changes more often than the figure has points to show it is drawn as
    # bucket means and ranges; a quieter one as its exact steps.
    changes = sum(int(np.count_nonzero(np.diff(np.asarray(p["fast_position"], np.float64)))) for p in parts)
    reduce_position = changes > 2 * POSITION_BUCKETS
    busy = False
    for k, part in enumerate(parts):
        x = np.asarray(part["minutes"], np.float64)
        if k:
            for ax in (ax_mid, ax_eq, ax_pos):
                ax.axvline(x[0], color="black", lw=0.9, ls=":")
        if part["name"] == "test":
            for ax in (ax_mid, ax_eq, ax_pos):
                ax.axvspan(x[0], x[-1], color=TEST, alpha=0.06, lw=0)
        ax_mid.plot(x, part["mid"], color="black", lw=0.8)
        ax_mid.text(x[0], 1.0, f" {part['name']}", transform=ax_mid.get_xaxis_transform(), va="bottom", ha="left",
                    fontsize=9, fontweight="bold")
        _band(ax_eq, x, part["fast_equity"], FAST, "fast kernel", lw=1.3)
        # Inventory: ~400 buckets over the whole span, each drawn as its min-max band and mean.
        buckets = max(50, int(POSITION_BUCKETS * len(x) / total_rows)) if reduce_position else len(x)
        busy |= _band(ax_pos, x, part["fast_position"], FAST, "fast kernel", lw=1.2, step=True, buckets=buckets,
                      center="mean", alpha=0.2)
        if part.get("exact_equity") is not None:
            _band(ax_eq, x, part["exact_equity"], EXACT, "exact engine", ls="--", lw=1.1)
            _band(ax_pos, x, part["exact_position"], EXACT, "exact engine", ls="--", lw=1.0, step=True,
                  buckets=buckets, center="mean", alpha=0.12)
        for line in ax_eq.get_lines():
            handles.setdefault(line.get_label(), line)
    ax_mid.set_ylabel(f"mid ({price_unit})")
    ax_mid.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax_eq.set_ylabel(f"equity ({quote}, after fees,\nmarked to mid; each part from 0)")
    ax_pos.set_ylabel(f"inventory ({qty_unit}, signed)" + ("\nmean and range per bucket" if busy else ""))
    ax_pos.set_xlabel("minutes from the first decision")
    for ax in (ax_mid, ax_eq, ax_pos):
        ax.grid(True, alpha=0.3)
    for ax in (ax_eq, ax_pos):
        ax.axhline(0.0, color="black", lw=0.6, alpha=0.5)
    labels = [h for h in handles if not h.startswith("_")]
    reduced = busy or any(len(envelope(p["minutes"], p["fast_equity"])[0]) < len(p["minutes"]) for p in parts)
    span = total_rows / POSITION_BUCKETS * float(np.median(np.diff(parts[0]["minutes"]))) * 60 if busy else 0
    extra = "; shaded: min-max of the rows behind each point" if reduced else ""
    if busy:
        extra += f" (inventory: buckets of {span:.0f} s, line = their mean)"
    fig.legend([handles[h] for h in labels], labels, loc="outside upper right", ncol=len(labels), fontsize=9,
               frameon=False)
    fig.suptitle(title, fontsize=11.5, x=0.01, ha="left")
    fig.supxlabel(f"dotted line: the split; each part is backtested from flat{extra}", fontsize=8, color="dimgray")
    return _save(fig, path)


def markouts(path: str | os.PathLike, panels: Sequence[dict], *, horizons_ns: Sequence[int], title: str,
             reference: dict | None = None) -> Path:
    """Mean markout of the lanes' fills (bps of the fill price) against the horizon.

    Args:
        panels: dicts with ``title`` and ``rows`` (:func:`mmsweep.sweep.pnl.summarize_markouts`).
        horizons_ns: the horizons (x axis, categorical; 0 = at the fill: the spread captured).
        reference: optional {horizon_ns: mean bps}: passive fills of every trade at the touch.
    """
    n = len(panels)
    cols = min(3, n)
    rows = -(-n // cols)
    fig = _figure(4.7 * cols, 3.5 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    labels = ["0"] + [f"{h / 1e9:g} s" if h >= 1e9 else f"{h / 1e6:g} ms" for h in horizons_ns]
    x = np.arange(len(labels))
    handles = {}
    for k, panel in enumerate(panels):
        ax = axes[k // cols, k % cols]
        counts: dict[str, int] = {}
        for side, color, dx in (("buy", BUY, -0.12), ("sell", SELL, 0.12), ("all", ALL, 0.0)):
            rows_ = [r for r in panel["rows"] if r["side"] == side]
            if not rows_ or rows_[0]["fills"] == 0:
                continue
            y = np.array([rows_[0]["spread_bps"]] + [r["markout_bps"] for r in rows_])
            se = np.array([np.nan] + [r["markout_se_bps"] for r in rows_])
            n_fills = rows_[0]["fills"]
            h = ax.errorbar(x + dx, y, yerr=1.96 * np.nan_to_num(se), color=color, marker="o", ms=4,
                            lw=1.6 if side == "all" else 1.1, capsize=2.5, ls="-" if side == "all" else "--")
            handles.setdefault(side, h)
            counts[side] = n_fills
        if reference:
            ry = [reference.get(int(h), np.nan) for h in horizons_ns]
            handles.setdefault("ref", ax.plot(x[1:], ry, color="gray", ls=":", marker="x", lw=1.2)[0])
        ax.axhline(0.0, color="black", lw=0.7)
        ax.set_xticks(x, labels)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("time after the fill")
        if k % cols == 0:
            ax.set_ylabel("markout (bps of fill price)\n> 0: fill worth more than paid")
        ax.set_title(f"{panel['title']}: {counts.get('all', 0)} fills ({counts.get('buy', 0)} buys, "
                     f"{counts.get('sell', 0)} sells)", fontsize=9.5)
    for k in range(n, rows * cols):
        axes[k // cols, k % cols].set_visible(False)
    names = {"all": "all fills (95 % CI)", "buy": "our buys", "sell": "our sells",
             "ref": "every trade's passive side at the touch (market)"}
    keys = [k for k in ("all", "buy", "sell", "ref") if k in handles]
    fig.legend([handles[k] for k in keys], [names[k] for k in keys], loc="outside lower center", ncol=len(keys),
               fontsize=8.5, frameon=False)
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)


def decomposition(path: str | os.PathLike, bars: Sequence[dict], *, quote: str, title: str) -> Path:
    """PnL split into spread capture, rebates/fees and inventory, as diverging stacked bars.

    Args:
        bars: dicts with ``label`` (x tick text), ``group`` (lane; bars of a group sit together)
            and the components of :mod:`mmsweep.sweep.pnl` (``spread_capture``, ``rebates_fees``,
            ``inventory``, ``PnL``).
    """
    fig = _figure(max(7.0, 0.62 * len(bars) + 2.5), 5.6)
    ax = fig.subplots()
    x = np.arange(len(bars), dtype=np.float64)
    groups = [b["group"] for b in bars]
    for k in range(1, len(bars)):  # a gap between lanes
        if groups[k] != groups[k - 1]:
            x[k:] += 0.6
    handles = []
    pos_base = np.zeros(len(bars))
    neg_base = np.zeros(len(bars))
    for key, label, color in COMPONENTS:
        v = np.array([b[key] for b in bars], np.float64)
        base = np.where(v >= 0, pos_base, neg_base)
        handles.append(ax.bar(x, v, 0.75, bottom=base, color=color, label=label, edgecolor="white", lw=0.5))
        pos_base += np.where(v >= 0, v, 0)
        neg_base += np.where(v < 0, v, 0)
    handles.append(ax.plot(x, [b["PnL"] for b in bars], ls="none", marker="D", ms=6, mfc="black", mec="white",
                           label="PnL (sum)")[0])
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(x, [b["label"] for b in bars], rotation=0, fontsize=7.5)
    ax.set_ylabel(f"{quote}")
    ax.grid(True, axis="y", alpha=0.3)
    for g in dict.fromkeys(groups):
        xs = x[[i for i, b in enumerate(groups) if b == g]]
        ax.text(xs.mean(), -0.13, g, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=9,
                fontweight="bold")
    fig.legend(handles, [h.get_label() for h in handles], loc="outside lower center", ncol=4, fontsize=8.5,
               frameon=False)
    fig.suptitle(title, fontsize=11.5)
    return _save(fig, path)


def folds(path: str | os.PathLike, *, blocks: np.ndarray, labels: Sequence[str], test_blocks: Sequence[int],
          metric_label: str, logits: np.ndarray | None, pbo: float | None, title: str) -> Path:
    """The objective of the top lanes block by block, and the CSCV logit distribution.

    Args:
        blocks: [lanes, B] objective per block (raw metric values).
        labels: [lanes] legend text per lane.
        test_blocks: blocks that are some fold's test block (shaded).
        logits: CSCV logits ``lambda_c`` (None: no PBO).
    """
    fig = _figure(13.0 if logits is not None else 8.0, 4.6)
    axes = fig.subplots(1, 2 if logits is not None else 1, squeeze=False, width_ratios=(1.6, 1.0)
                        if logits is not None else None)[0]
    ax = axes[0]
    b = np.arange(blocks.shape[1])
    for k in test_blocks:
        ax.axvspan(k - 0.5, k + 0.5, color=TEST, alpha=0.08, lw=0)
    for row, label in zip(blocks, labels):
        ax.plot(b, row, marker="o", ms=4, lw=1.3, label=label)
    ax.axhline(0.0, color="black", lw=0.7)
    ax.set_xticks(b, [f"block {k}" for k in b])
    ax.set_xlabel("train part, block by block (shaded: a fold's test block)")
    ax.set_ylabel(metric_label)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    ax.set_title("the top lanes on each block (each backtested from flat)", fontsize=10)
    if logits is not None:
        ax2 = axes[1]
        lg = np.asarray(logits, np.float64)
        lim = max(1.0, float(np.max(np.abs(lg))) if lg.size else 1.0)
        bins = np.linspace(-lim, lim, 25)
        ax2.hist(lg[lg <= 0], bins=bins, color=SELL, alpha=0.75, label="winner at or below the OOS median")
        ax2.hist(lg[lg > 0], bins=bins, color=BUY, alpha=0.75, label="winner above the OOS median")
        ax2.axvline(0.0, color="black", lw=0.8)
        ax2.set_xlabel("logit of the in-sample winner's out-of-sample rank")
        ax2.set_ylabel("CSCV splits")
        ax2.yaxis.get_major_locator().set_params(integer=True)
        ax2.set_title(f"PBO = {pbo:.2f} (share of splits left of 0)", fontsize=10)
        ax2.legend(loc="upper left", fontsize=7.5, frameon=False)
        ax2.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=11.5)
    return _save(fig, path)
