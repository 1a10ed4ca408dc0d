"""Figures of a run folder (PNG, matplotlib's Agg canvas: no display, no global backend change).

``verify_scatter``: fast kernel vs exact engine, one panel per metric, y = x line, the top-K
lanes highlighted.  ``verify_fill_models``: the same for several fill models on one plot.
``verify_curves``: equity and inventory over time of a few lanes, fast and exact overlaid.  All
take plain arrays (see :mod:`mmsweep.sweep.verify` for the caller).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

#: quote currencies recognised at the end of a symbol (longest first)
_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "BTC", "ETH")

_FAST = "#1f77b4"  # fast kernel
_EXACT = "#d62728"  # exact engine
_TOP = "#ff7f0e"
_SAMPLE = "#7f7f7f"
_FRONTIER = "#9467bd"


def currency_units(symbol: str) -> tuple[str, str]:
    """``(quote currency, qty unit)`` of an exchange symbol: ``BTCUSDT`` -> ``("USDT", "BTC")``;
    generic names when the symbol does not end with a known quote currency.  COIN-M, Deribit and
    BitMEX symbols are recognised too (``ETHUSD_PERP`` -> ``("USD", "ETH")``); for an inverse
    contract the PnL currency is the second (:func:`mmsweep.sweep.data.instruments.units`)."""
    from .data.instruments import currencies

    base, quote = currencies(symbol)
    if base and quote:
        return quote, base
    return "quote ccy", "qty units"


def pnl_units(instrument: dict) -> tuple[str, str]:
    """``(currency of PnL, qty unit)`` of a manifest's instrument: the quote currency and the
    coin for linear contracts (``("USDT", "BTC")``), the coin and contracts for inverse ones
    (``("ETH", "contracts")`` for ETHUSD_PERP)."""
    quote, qty = currency_units((instrument or {}).get("symbol", ""))
    if (instrument or {}).get("inverse"):
        return (qty if qty != "qty units" else "coin"), "contracts"
    return quote, qty


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    fig.savefig(path, format="png")  # explicit: callers write to temporary names first
    return path


def verify_scatter(path: str | os.PathLike, panels: Sequence[dict], *, top: np.ndarray, title: str,
                   frontier: np.ndarray | None = None) -> Path:
    """Fast vs exact scatter, one panel per entry of ``panels``; the legend below the axes.

    Args:
        path: PNG to write.
        panels: dicts with ``fast``, ``exact`` ([n] arrays, NaN allowed: not drawn, counted in
            the panel's note), ``label`` (axis text with units), ``title`` (panel title).
        top: [n] bool, the lanes selected as the sweep's top K (highlighted).
        title: figure title.
        frontier: [n] bool, the rest of the fast frontier (drawn apart from the other lanes).
    """
    top = np.asarray(top, bool)
    frontier = np.zeros_like(top) if frontier is None else np.asarray(frontier, bool) & ~top
    n = len(top)
    size = 30 if n <= 300 else 12 if n <= 3000 else 6
    fig = _figure(6.0 * len(panels), 6.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        fast = np.asarray(panel["fast"], np.float64)
        exact = np.asarray(panel["exact"], np.float64)
        ok = np.isfinite(fast) & np.isfinite(exact)
        other = ok & ~top & ~frontier
        for mask, color, marker, label, z, s in (
                (other, _SAMPLE, "o", "other lanes" if frontier.any() else "random sample", 2, size),
                (ok & frontier, _FRONTIER, "s", "rest of the frontier", 3, max(size, 14)),
                (ok & top, _TOP, "D", "sweep's top K", 4, 30)):
            if mask.any():
                ax.scatter(fast[mask], exact[mask], s=s, c=color, marker=marker, alpha=0.8, edgecolors="black",
                           linewidths=0.4 if s >= 14 else 0.0, label=f"{label} ({int(mask.sum())})", zorder=z)
        if ok.any():
            lo = float(min(fast[ok].min(), exact[ok].min()))
            hi = float(max(fast[ok].max(), exact[ok].max()))
            pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="black", lw=1, label="y = x", zorder=1)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        else:
            ax.text(0.5, 0.5, "no lane with finite values on both sides", ha="center", va="center",
                    transform=ax.transAxes)
        dropped = int((~ok).sum())
        if dropped:
            ax.text(0.99, 0.01, f"{dropped} lane(s) with NaN not shown", ha="right", va="bottom", fontsize=8,
                    transform=ax.transAxes, color="dimgray")
        ax.set_xlabel(f"fast kernel: {panel['label']}")
        ax.set_ylabel(f"exact engine: {panel['label']}")
        ax.set_title(panel["title"], fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)


#: one colour and marker per fill model (cross, touch, queue, then any other)
_MODEL_STYLE = {"cross": ("#1f77b4", "o"), "touch": ("#d62728", "^"), "queue": ("#2ca02c", "s")}
_MODEL_EXTRA = (("#9467bd", "v"), ("#8c564b", "P"), ("#e377c2", "X"))


def verify_fill_models(path: str | os.PathLike, series: Sequence[dict], *, exact: np.ndarray,
                       exact_pnl: np.ndarray, label: str, pnl_label: str, title: str) -> Path:
    """Fast vs exact for several fill models on one plot: objective (left) and PnL (right),
    one colour and marker per model, the y = x line, the legend below the axes (off the data).

    Args:
        path: PNG to write.
        series: per fill model, ``name``, ``fast`` and ``fast_pnl`` ([n], the same lanes as
            ``exact``), ``rho`` and ``rho_pnl`` (Spearman, for the legend).
        exact, exact_pnl: [n] the exact engine's objective and PnL (one replay for every model).
        label, pnl_label: axis text with units.
        title: figure title.
    """
    n = len(np.asarray(exact))
    size = 26 if n <= 300 else 10 if n <= 3000 else 5
    fig = _figure(12.0, 6.4)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    extra = iter(_MODEL_EXTRA * 4)
    styles = {s["name"]: _MODEL_STYLE.get(s["name"]) or next(extra) for s in series}
    for ax, key, rho_key, ex, text in ((axes[0], "fast", "rho", exact, label),
                                       (axes[1], "fast_pnl", "rho_pnl", exact_pnl, pnl_label)):
        ex = np.asarray(ex, np.float64)
        lo, hi = np.inf, -np.inf
        for z, s in enumerate(series):
            fast = np.asarray(s[key], np.float64)
            ok = np.isfinite(fast) & np.isfinite(ex)
            color, marker = styles[s["name"]]
            rho = s.get(rho_key)
            rho_text = f"Spearman {rho:.3f}" if rho is not None and np.isfinite(rho) else "Spearman n/a"
            ax.scatter(fast[ok], ex[ok], s=size, c=color, marker=marker, alpha=0.55, linewidths=0.0,
                       label=f"fast {s['name']}: {rho_text} ({int(ok.sum()):,} lanes)", zorder=2 + z)
            if ok.any():
                lo = min(lo, float(fast[ok].min()), float(ex[ok].min()))
                hi = max(hi, float(fast[ok].max()), float(ex[ok].max()))
        beyond = 0
        if np.isfinite(lo):
            values = np.concatenate([np.asarray(s[key], np.float64) for s in series] + [ex])
            values = values[np.isfinite(values)]
            q_lo, q_hi = (float(q) for q in np.quantile(values, [0.02, 0.98]))
            if hi - lo > 2 * (q_hi - q_lo) > 0:  # a few lanes far out would squeeze the rest into a corner
                lo, hi = q_lo, q_hi
                for s in series:
                    fast = np.asarray(s[key], np.float64)
                    ok = np.isfinite(fast) & np.isfinite(ex)
                    beyond += int((ok & ((fast < lo) | (fast > hi) | (ex < lo) | (ex > hi))).sum())
            pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="black", lw=1, label="y = x", zorder=1)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(f"fast kernel: {text}")
        ax.set_ylabel(f"exact engine: {text}")
        if beyond:
            ax.set_title(f"{'objective' if key == 'fast' else 'PnL'} ({beyond} point(s) beyond the axes: the 2-98 % "
                         "range shown)", fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, fontsize=8, frameon=False,
                  markerscale=1.5)
    for ax, name in zip(axes, ("objective", "PnL")):
        if not ax.get_title():
            ax.set_title(name, fontsize=11)
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)


def verify_curves(path: str | os.PathLike, minutes: np.ndarray, *, fast_equity: np.ndarray,
                  exact_equity: np.ndarray, fast_position: np.ndarray, exact_position: np.ndarray,
                  titles: Sequence[str], quote: str, qty_unit: str, part: str, title: str) -> Path:
    """Equity (top row) and inventory (bottom row) of a few lanes, fast and exact overlaid.

    Args:
        path: PNG to write.
        minutes: [T] time of each decision, minutes from the part's start.
        fast_equity, exact_equity, fast_position, exact_position: [n, T] (quote currency; qty units).
        titles: [n] column titles (lane, rank, parameters).
        quote, qty_unit: unit names for the axis labels.
        part: ``train`` / ``test`` (axis label).
        title: figure title.
    """
    n = len(titles)
    title_lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig = _figure(max(4.6 * n, 6.0), 6.8 + 0.2 * title_lines)
    axes = fig.subplots(2, n, squeeze=False, sharex="col")
    x = np.asarray(minutes, np.float64)
    for j in range(n):
        top_ax, bottom_ax = axes[0, j], axes[1, j]
        top_ax.plot(x, fast_equity[j], color=_FAST, lw=1.3, label="fast kernel")
        top_ax.plot(x, exact_equity[j], color=_EXACT, lw=1.1, ls="--", label="exact engine")
        bottom_ax.step(x, fast_position[j], where="post", color=_FAST, lw=1.3, label="fast kernel")
        bottom_ax.step(x, exact_position[j], where="post", color=_EXACT, lw=1.1, ls="--", label="exact engine")
        top_ax.set_title(titles[j], fontsize=9.5)
        bottom_ax.set_xlabel(f"minutes from {part} start")
        for ax in (top_ax, bottom_ax):
            ax.grid(True, alpha=0.3)
            ax.axhline(0.0, color="black", lw=0.6, alpha=0.5)
        top_ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        if j == 0:
            top_ax.set_ylabel(f"equity ({quote}, marked to mid, after fees)")
            bottom_ax.set_ylabel(f"inventory ({qty_unit}, signed)")
            top_ax.legend(loc="best", fontsize=8, framealpha=0.85)
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)
