"""`mmsweep report` and `mmsweep show` end to end on a tiny run; the page in headless Chromium."""
from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from mmsweep.sweep.cli import main
from mmsweep.sweep.config import parse_experiment
from mmsweep.sweep.errors import InputError
from mmsweep.sweep.lane_detail import analyse_lanes
from mmsweep.sweep.report_html import build_report, load_run, top_distinct
from mmsweep.sweep.run import METRIC_COLUMNS, prepare, run_experiment
from mmsweep.sweep.verify import verify_run

REPO = Path(__file__).resolve().parents[1]


def tiny_experiment(name: str):
    """The demo's structure on ~2 minutes of market: 4 x 3 x 2 = 24 lanes, float64."""
    spec = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    spec["name"] = name
    spec["data"]["synthetic"]["hours"] = 0.03
    spec["sweep"] = {"half_spread": {"list": [0.5, 1.0, 2.0, 3.0]}, "skew": {"list": [0.01, 0.1, 1.0]},
                     "grid_interval": {"list": [0.5, 1.0]}}
    spec["constraints"] = {"min_trades": 1}
    spec["verify"] = {"top_k": 2, "sample": 2, "seed": 1, "processes": 1}
    spec["run"] = {"chunk_lanes": 64, "dtype": "float64"}
    return parse_experiment(spec)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSWEEP_CACHE", str(root / "cache"))
        run = run_experiment(tiny_experiment("tiny_report"), out_root=root / "runs", log=lambda m: None)
        verify_run(run, log=lambda m: None)
        yield run


@pytest.fixture(scope="module")
def page(run_dir) -> Path:
    log: list[str] = []
    path = build_report(run_dir, top=3, log=log.append)
    assert any(line.startswith("report: ") for line in log)
    return path


class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.src: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.src.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if re.match(r"^(https?:)?//", attrs.get(key) or ""):
                self.external.append(attrs[key])


def test_report_page_and_figures(run_dir, page) -> None:
    assert page == run_dir / "report" / "index.html"
    text = page.read_text()
    parser = _Images()
    parser.feed(text)
    assert not parser.external, "the page must open from disk with nothing fetched"
    names = set(parser.src)
    top = top_distinct(pl.read_parquet(run_dir / "results.parquet"), 3)
    expected = {"heatmap.png", "sensitivity.png", "decomposition.png", "markouts_train.png", "markouts_test.png",
                "verify_scatter.png"} | {f"lane_{lane}.png" for lane in top}
    assert expected <= names, expected - names
    for name in names:
        path = page.parent / name
        assert path.is_file() and path.stat().st_size > 10_000, name
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 600, (name, img.shape)
        assert img[..., :3].std() > 0.05, f"{name} is blank"
    for heading in ("Warnings", "Selection and overfitting", "deflated SR, lane", "hftbacktest's stats", "PnL and where it comes from", "Fill markouts",
                    "Fast kernel vs exact engine", "spread capture", "inventory MTM",
                    "frontier: the fast top 2 x 4", "exact rank of the fast #1", "bootstrap"):
        assert heading in text, heading
    # the warnings come first
    assert text.index("id='warnings'") < text.index("id='landscape'") < text.index("id='stats'")
    for lane in top:
        assert f"<td class=\"l\">{lane}</td>" in text
    assert not list(run_dir.glob("report.*"))  # no temporary folder left


def test_lane_details_add_up(run_dir) -> None:
    """The decompositions sum to each engine's own PnL; the fast side is the sweep's."""
    exp, results, _, _ = load_run(run_dir)
    lanes = top_distinct(results, 2)
    details = analyse_lanes(prepare(exp, log=lambda m: None), lanes)
    for part, d in details.parts.items():
        for i, lane in enumerate(lanes):
            for m in METRIC_COLUMNS:
                stored = results[f"{part}_{m}"][int(lane)]
                np.testing.assert_allclose(d.fast_metrics[m][i], stored, rtol=1e-9, equal_nan=True, err_msg=m)
            fast, exact = d.fast_decomposition[i], d.exact_decomposition[i]
            for dec, metrics in ((fast, d.fast_metrics), (exact, d.exact_metrics),
                                 (d.exact_row_decomposition[i], d.exact_metrics)):
                total = dec["spread_capture"] + dec["rebates_fees"] + dec["inventory"]
                assert total == pytest.approx(metrics["PnL"][i], rel=1e-9, abs=1e-9)
                assert dec["rebates_fees"] == pytest.approx(-metrics["Fees"][i], rel=1e-9, abs=1e-12)
            assert exact["fills"] == pytest.approx(d.exact_metrics["NumberOfTrades"][i])
            marks = {r["horizon_ns"]: r for r in d.markouts[i] if r["side"] == "all"}
            assert set(marks) == set(details.horizons_ns) and marks[details.horizons_ns[0]]["fills"] == exact["fills"]


def test_cli_show_and_report_errors(run_dir, tmp_path) -> None:
    lane = int(top_distinct(pl.read_parquet(run_dir / "results.parquet"), 1)[0])
    result = CliRunner().invoke(main, ["show", str(run_dir), "--lane", str(lane), "--out", str(tmp_path / "lanes")])
    assert result.exit_code == 0, result.output
    for needle in ("train fast", "train exact", "test fast", "test exact", "SR", "spread capture (per row)",
                   "inventory MTM (per fill)", "markouts of the exact fills, train part"):
        assert needle in result.output, needle
    for name in (f"lane_{lane}.png", f"lane_{lane}_markouts_train.png", f"lane_{lane}_decomposition.png"):
        assert (tmp_path / "lanes" / name).stat().st_size > 10_000, name
    bad = CliRunner().invoke(main, ["show", str(run_dir), "--lane", "999"])
    assert bad.exit_code == 2 and "lane 999" in bad.output
    with pytest.raises(InputError, match="config.json"):
        build_report(tmp_path, log=lambda m: None)
    (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(InputError, match="results.parquet"):
        build_report(tmp_path, log=lambda m: None)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is required for this test: apt-get install -y chromium chromium-driver "
                "(.ci/run does)", pytrace=False)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")

# Added to a copy of the page: after load, record which images decoded.
_PROBE = """<script>window.addEventListener('load', function () {
  var bad = [], n = 0;
  for (var img of document.images) { n++; if (!(img.complete && img.naturalWidth > 0)) bad.push(img.src); }
  document.body.setAttribute('data-images', String(n));
  document.body.setAttribute('data-broken', JSON.stringify(bad));
});</script>"""


@pytest.mark.browser
def test_report_in_headless_chromium(page, tmp_path) -> None:
    chromium = _chromium()
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    try:
        base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
        dom = subprocess.run(base + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        n = int(re.search(r'data-images="(\d+)"', dom.stdout).group(1))
        broken = json.loads(html.unescape(re.search(r'data-broken="([^"]*)"', dom.stdout).group(1)))
        assert n >= 8 and broken == [], broken
        shot = tmp_path / "report.png"
        run = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1400,3000", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
        img = mpimg.imread(shot)
        assert img.shape[:2] == (3000, 1400) and img[..., :3].std() > 0.1
        keep = os.environ.get("MMSWEEP_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
    finally:
        probe.unlink(missing_ok=True)
