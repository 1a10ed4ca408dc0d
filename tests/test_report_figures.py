"""What the report's figures say: a coin's small PnLs readable in their cells, prices in their unit."""
from __future__ import annotations

import numpy as np
import pytest

from mmsweep.sweep import report_figures as rf


@pytest.fixture
def saved(monkeypatch) -> list:
    """The figures the report functions would write (instead of writing them)."""
    figures: list = []

    def keep(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(rf, "_save", keep)
    return figures


def test_cell_power_brings_small_magnitudes_to_three_digits() -> None:
    assert rf._cell_power(3.1e-4) == -6 and rf._cell_power(4.0e-2) == -3 and rf._cell_power(0.5) == -3
    assert rf._cell_power(1.0) == 0 and rf._cell_power(2.5e4) == 0
    assert rf._cell_power(0.0) == 0 and rf._cell_power(float("nan")) == 0


def test_heatmap_cells_of_a_coin_pnl_are_short_and_the_scale_is_named(saved, tmp_path) -> None:
    value = np.array([[3.142e-4, -2.4e-5, np.nan], [1.7e-6, -2.33e-4, 6.67e-6]])
    rf.heatmaps(tmp_path / "h.png", x_name="half_spread", y_name="skew", x_labels=np.array([0.2, 0.6, 1.0]),
                y_labels=np.array([0.01, 0.1]), panels=[{"value": value, "title": "train PnL"}],
                metric_label="PnL (ETH, after fees)", title="t", note="n")
    fig = saved[0]
    ax = fig.axes[0]
    cells = sorted(t.get_text() for t in ax.texts)
    assert cells == sorted(["314", "-24", "1.7", "-233", "6.67"])
    assert all(len(c) <= 4 for c in cells)
    assert fig.axes[1].get_ylabel() == "PnL (ETH, after fees)\ncell values x 1e-6"
    # a quote-currency PnL keeps its own digits and an unscaled colour bar
    rf.heatmaps(tmp_path / "h2.png", x_name="a", y_name="b", x_labels=np.array([1, 2]), y_labels=np.array([1]),
                panels=[{"value": np.array([[1234.0, -5.5]]), "title": "p"}], metric_label="PnL (USDT)", title="t",
                note="n")
    assert sorted(t.get_text() for t in saved[1].axes[0].texts) == ["-5.5", "1.23k"]
    assert saved[1].axes[1].get_ylabel() == "PnL (USDT)"


def test_lane_curves_label_the_mid_in_its_price_unit_and_equity_in_the_coin(saved, tmp_path) -> None:
    t = np.arange(50.0)
    part = {"name": "train", "minutes": t, "mid": 2680 + np.sin(t), "fast_equity": 1e-5 * t,
            "fast_position": np.round(np.cos(t) * 3)}
    rf.lane_curves(tmp_path / "l.png", parts=[part], quote="ETH", qty_unit="contracts", price_unit="USD per ETH",
                   title="lane 0")
    ax_mid, ax_eq, ax_pos = saved[0].axes[:3]
    assert ax_mid.get_ylabel() == "mid (USD per ETH)"
    assert ax_eq.get_ylabel().startswith("equity (ETH,") and ax_pos.get_ylabel().startswith("inventory (contracts")
