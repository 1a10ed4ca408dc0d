"""Experiment config and lane grids: the bundled experiments, lane semantics, and every kind of
bad input failing with the file name and the dotted key."""
from __future__ import annotations

import copy
import itertools
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmsweep.sweep import grids
from mmsweep.sweep.config import METRICS, POLICIES, load_experiment, parse_experiment
from mmsweep.sweep.errors import InputError
from mmsweep.sweep.grids import build_lanes, lane, n_lanes

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

BASE = {
    "name": "t",
    "data": {"source": "synthetic", "synthetic": {"hours": 0.5, "seed": 3}},
    "interval_ms": 100,
    "latency": {"entry_ms": 10},
    "fees": {"maker_bps": -0.5, "taker_bps": 7.0},
    "features": [{"kind": "imbalance", "levels": 5}, {"kind": "realized_vol", "window_s": 60}],
    "strategy": {"policy": "grid", "params": {"order_qty": 0.01, "n_levels": 5, "max_position": 0.5}},
    "sweep": {
        "half_spread": {"linspace": [1, 3, 3]},
        "skew": {"logspace": [-1, 0, 2]},
        "grid_interval": {"list": [1, 2]},
    },
}


def exp_with(**changes):
    """BASE with top-level sections replaced (None deletes)."""
    d = copy.deepcopy(BASE)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return parse_experiment(d, "test")


# --- bundled experiments ----------------------------------------------------------------------


def test_demo_experiment_loads():
    exp = load_experiment(EXPERIMENTS / "demo.yaml")
    assert exp.name == "demo" and exp.strategy.policy == "grid"
    assert n_lanes(exp) == 16 * 16 * 16
    lanes = build_lanes(exp)
    assert list(lanes) == exp.param_names == list(POLICIES["grid"].params)
    assert all(v.dtype == np.float64 and v.shape == (4096,) for v in lanes.values())
    assert exp.strategy.params["relative"] == 1  # bps of mid
    spec = exp.frame_spec()
    assert spec.interval_ns == 100_000_000 and spec.latency.entry_ns == 10_000_000 and spec.features == ()


def test_real_experiment_loads(shared_data):
    exp = load_experiment(EXPERIMENTS / "real_btcusdt_apt.yaml")
    assert exp.data.quoted == "futures" and exp.data.signals == ("spot",)
    assert all(Path(p).is_file() for f in exp.data.files.values() for p in f.paths)
    assert exp.features[0].instrument == "spot"
    assert exp.strategy.static == {"signals": ("spot.rolling_return_30s",)}
    assert n_lanes(exp) == 10 * 8 * 64
    lanes = build_lanes(exp)
    assert np.all((lanes["beta"] >= 0) & (lanes["beta"] < 2))
    assert exp.frame_spec().latency.rows is not None  # the order-latency file is read


@pytest.mark.parametrize("name", ["demo.yaml", "real_btcusdt_apt.yaml"])
def test_to_dict_round_trips(name, shared_data, tmp_path):
    exp = load_experiment(EXPERIMENTS / name)
    d = exp.to_dict()
    json.dumps(d)  # plain types only: it goes into the run folder
    assert parse_experiment(d) == exp
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    again = load_experiment(path)
    assert again == exp
    for k, v in build_lanes(again).items():
        np.testing.assert_array_equal(v, build_lanes(exp)[k])


# --- lanes --------------------------------------------------------------------------------------


def test_product_of_grid_axes_first_axis_slowest():
    exp = exp_with()
    lanes = build_lanes(exp)
    half = [1.0, 2.0, 3.0]
    skew = [0.1, 1.0]
    step = [1.0, 2.0]
    expected = list(itertools.product(half, skew, step))
    assert n_lanes(exp) == len(expected) == 12
    got = list(zip(lanes["half_spread"], lanes["skew"], lanes["grid_interval"]))
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-15)
    np.testing.assert_array_equal(lanes["n_levels"], 5.0)
    np.testing.assert_array_equal(lanes["order_qty"], 0.01)
    for i in (0, 5, 11):
        assert lane(exp, i) == {k: v[i] for k, v in lanes.items()}


def test_axis_forms_and_shorthands():
    a = exp_with(sweep={"half_spread": [1, 2, 4], "skew": {"linspace": {"start": 0, "stop": 1, "num": 5}}})
    lanes = build_lanes(a)
    assert n_lanes(a) == 15
    np.testing.assert_array_equal(np.unique(lanes["half_spread"]), [1, 2, 4])
    np.testing.assert_allclose(np.unique(lanes["skew"]), [0, 0.25, 0.5, 0.75, 1])
    one = exp_with(sweep={"half_spread": {"linspace": [2, 2, 1]}})
    assert n_lanes(one) == 1 and build_lanes(one)["half_spread"][0] == 2


def test_nothing_swept_is_one_lane():
    exp = exp_with(strategy={"policy": "grid", "params": {"half_spread": 2, "order_qty": 0.01, "max_position": 1}},
                   sweep=None)
    lanes = build_lanes(exp)
    assert n_lanes(exp) == 1
    assert lanes == {k: np.array([v]) for k, v in lanes.items()}
    assert lanes["skew"][0] == 0.0 and lanes["n_levels"][0] == 1.0  # registry defaults


@pytest.mark.parametrize("method", ["random", "sobol"])
def test_samples_are_deterministic_by_seed(method):
    def make(seed, n=100):
        return exp_with(sweep={"half_spread": {"list": [1, 2]},
                               "skew": {method: {"low": 0.01, "high": 1, "n": n, "seed": seed, "log": True}}})

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # n = 100 is no power of two: Sobol must not warn
        a, b, c = build_lanes(make(7)), build_lanes(make(7)), build_lanes(make(8))
    assert n_lanes(make(7)) == 200
    np.testing.assert_array_equal(a["skew"], b["skew"])
    assert not np.array_equal(a["skew"], c["skew"])
    assert np.all((a["skew"] >= 0.01) & (a["skew"] < 1))
    # the sample is one block: each half_spread meets the same 100 skews
    np.testing.assert_array_equal(a["skew"][:100], a["skew"][100:])
    # a longer Sobol/random draw with the same seed starts with the same points
    np.testing.assert_array_equal(build_lanes(make(7, 150))["skew"][:100], a["skew"][:100])


def test_joint_sample_is_zipped_and_crossed_with_grid_axes():
    exp = exp_with(sweep={
        "grid_interval": {"list": [1, 2, 4]},
        "joint": [{"sobol": {"n": 64, "seed": 5},
                   "axes": {"half_spread": {"low": 1, "high": 20}, "skew": [0, 1]}}],
    })
    lanes = build_lanes(exp)
    assert n_lanes(exp) == 3 * 64  # not 3 * 64 * 64
    pairs = set(zip(lanes["half_spread"], lanes["skew"]))
    assert len(pairs) == 64
    assert np.all((lanes["half_spread"] >= 1) & (lanes["half_spread"] < 20))
    np.testing.assert_array_equal(np.unique(lanes["grid_interval"]), [1, 2, 4])
    # a single-mapping joint is one group too
    single = exp_with(sweep={"joint": {"random": {"n": 10, "seed": 1}, "axes": {"half_spread": [1, 2]}}})
    assert n_lanes(single) == 10


def test_derived_ties():
    exp = exp_with(sweep={"half_spread": {"list": [1, 2, 3]},
                          "derived": {"grid_interval": "half_spread", "skew": "grid_interval / 4"}})
    lanes = build_lanes(exp)
    assert n_lanes(exp) == 3
    np.testing.assert_array_equal(lanes["grid_interval"], lanes["half_spread"])
    np.testing.assert_array_equal(lanes["skew"], lanes["half_spread"] * 0.25)
    assert [t.target for t in exp.sweep.derived] == ["grid_interval", "skew"]  # dependency order
    for text, factor in [("2*half_spread", 2.0), ("half_spread * 0.5", 0.5), ("1e-1 * half_spread", 0.1)]:
        e = exp_with(sweep={"half_spread": {"list": [1, 2]}, "derived": {"grid_interval": text}})
        np.testing.assert_allclose(build_lanes(e)["grid_interval"], factor * np.array([1.0, 2.0]))
    # a chain written in reverse order still resolves; a tie may read a fixed parameter
    rev = exp_with(sweep={"half_spread": [1, 2], "derived": {"skew": "grid_interval", "grid_interval": "half_spread"}})
    np.testing.assert_array_equal(build_lanes(rev)["skew"], [1, 2])
    fixed = exp_with(sweep={"half_spread": [1, 2], "derived": {"grid_interval": "2*max_position"}})
    np.testing.assert_array_equal(build_lanes(fixed)["grid_interval"], [1.0, 1.0])


def test_static_feature_slots_and_quoted_instrument():
    exp = exp_with(
        features=[{"kind": "realized_vol", "window_s": 60}, {"kind": "mid_return", "lag_s": 1, "instrument": "spot"},
                  {"kind": "imbalance", "instrument": "futures"}],
        strategy={"policy": "linear_alpha", "static": {"features": ["futures.imbalance_5", "spot.mid_return_1s"]},
                  "params": {"order_qty": 1, "max_position": 5, "coef_0": 2.5, "coef_2": 0}},
        sweep={"half_spread": [1, 2], "coef_1": {"linspace": [-1, 1, 3]}},
    )
    assert exp.features[2].instrument is None  # the quoted instrument is the default spelling
    assert exp.strategy.static == {"features": ("imbalance_5", "spot.mid_return_1s"), "vol": "realized_vol_60s"}
    lanes = build_lanes(exp)
    assert list(lanes)[:4] == ["coef_0", "coef_1", "coef_2", "coef_3"]
    assert n_lanes(exp) == 6 and np.all(lanes["coef_0"] == 2.5) and np.all(lanes["coef_3"] == 0)
    assert "coef_2" not in exp.to_dict()["strategy"]["params"]  # unused slots are implied


def test_limits_may_be_infinite_and_default_to_no_limit():
    exp = exp_with(strategy={"policy": "grid", "params": {"order_qty": 0.01, "max_position": float("inf")}})
    assert np.all(np.isinf(build_lanes(exp)["max_position"]))
    d = copy.deepcopy(BASE)
    del d["strategy"]["params"]["max_position"]
    assert parse_experiment(d).strategy.params["max_position"] == math.inf  # the kernel's default
    assert parse_experiment(exp.to_dict()) == exp


def test_registry_is_the_kernel_policies_declarations():
    """config.POLICIES is a view of each policy module's own PARAMS / STATIC (one declaration)."""
    from mmsweep.kernels.policies import POLICIES as KERNEL

    assert list(POLICIES) == list(KERNEL)
    for name, policy in POLICIES.items():
        assert policy.params == KERNEL[name].PARAMS and policy.static == KERNEL[name].STATIC, name
        for pname, spec in policy.params.items():
            assert spec.unit and spec.doc and (spec.default is None or spec.first_bad([spec.default]) is None), \
                (name, pname)


def test_objective_metrics_are_kernel_metrics():
    from mmsweep.kernels.metrics import METRIC_NAMES

    assert set(METRICS) <= set(METRIC_NAMES)
    assert exp_with(objective={"metric": "MaxDrawdown"}).objective.maximize is False


def test_feature_seconds_are_floats():
    a = exp_with(features=[{"kind": "mid_return", "lag_s": 1}]).frame_spec().describe()
    b = exp_with(features=[{"kind": "mid_return", "lag_s": 1.0}]).frame_spec().describe()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # same frames cache key


def test_every_policy_runs_on_its_defaults():
    feats = [{"kind": "realized_vol", "window_s": 60}, {"kind": "vamp_bps", "levels": 5},
             {"kind": "rolling_return", "instrument": "spot", "window_s": 300}]
    for name, policy in POLICIES.items():
        params = {p: 1.0 for p, spec in policy.params.items() if spec.default is None}
        exp = exp_with(features=feats, strategy={"policy": name, "params": params}, sweep=None)
        assert list(build_lanes(exp)) == list(policy.params)


def test_data_load_synthetic():
    exp = exp_with(data={"source": "synthetic", "synthetic": {"hours": 0.01, "seed": 1}, "quoted": "spot"})
    quoted, signals = exp.data.load()
    assert list(signals) == ["futures"] and len(quoted.table) > 0


# --- bad input ----------------------------------------------------------------------------------


def _set(path: str, value):
    """A change to BASE: set the dotted ``path`` (None deletes)."""
    def apply(d):
        *parents, last = path.split(".")
        for p in parents:
            d = d.setdefault(p, {})
        if value is None:
            d.pop(last, None)
        else:
            d[last] = value
    return apply


def _both(*changes):
    def apply(d):
        for c in changes:
            c(d)
    return apply


_NO_STEP = _set("sweep.grid_interval", None)  # frees grid_interval to be derived
_NO_LEVELS = _set("strategy.params.n_levels", None)  # frees n_levels to be swept

BAD = [
    # (expected dotted key, change, words the message must contain)
    ("nmae", _set("nmae", "x"), ["unknown key", "did you mean 'name'"]),
    ("metrics.book_sz", _set("metrics", {"resample_s": 1, "book_sz": 5}), ["unknown key", "book_size"]),
    ("data.synthetic.hourz", _set("data.synthetic.hourz", 1), ["unknown key", "hours"]),
    ("strategy.params.half_sprd", _set("strategy.params.half_sprd", 2), ["did you mean 'half_spread'"]),
    ("sweep.bta", _set("sweep.bta", [1, 2]), ["has no parameter 'bta'"]),
    ("sweep.half_spread.linspace.stop", _set("sweep.half_spread", {"linspace": [20, 1, 16]}), ["greater than start"]),
    ("sweep.half_spread.linspace.num", _set("sweep.half_spread", {"linspace": [1, 20, 0]}), [">= 1"]),
    ("sweep.half_spread.linspace", _set("sweep.half_spread", {"linspace": [1, 20]}), ["[start, stop, num]"]),
    ("sweep.half_spread.linspce", _set("sweep.half_spread", {"linspce": [1, 20, 3]}), ["did you mean 'linspace'"]),
    ("sweep.half_spread.linspace", _set("sweep.half_spread", {"linspace": [-5, 5, 3]}), ["-5", ">= 0"]),
    ("sweep.half_spread.list", _set("sweep.half_spread", {"list": [1, 1, 2]}), ["repeats"]),
    ("sweep.half_spread", _set("sweep.half_spread", 3), ["strategy.params"]),
    ("sweep.skew.random.high", _set("sweep.skew", {"random": {"low": 1, "high": 0, "n": 5}}), ["greater than low"]),
    ("sweep.skew.random.low", _set("sweep.skew", {"random": {"low": 0, "high": 1, "n": 5, "log": True}}), ["low > 0"]),
    ("sweep.skew.sobol.n", _set("sweep.skew", {"sobol": {"low": 0, "high": 1, "n": 0}}), [">= 1"]),
    ("sweep.n_levels", _both(_NO_LEVELS, _set("sweep.n_levels", {"random": {"low": 1, "high": 5, "n": 4}})),
     ["whole numbers"]),
    ("sweep.n_levels.list", _both(_NO_LEVELS, _set("sweep.n_levels", {"list": [1, 2.5]})), ["whole number"]),
    ("strategy.params.order_qty", _set("strategy.params.order_qty", -0.01), ["> 0"]),
    ("strategy.params.order_qty", _set("strategy.params.order_qty", None), ["needs order_qty"]),
    ("strategy.params.max_position", _set("strategy.params.max_position", float("nan")), ["finite"]),
    ("interval_ms", _set("interval_ms", "fast"), ["expected a number", "'fast'"]),
    ("interval_ms", _set("interval_ms", 0), ["> 0"]),
    ("objective.maximize", _set("objective", {"metric": "SR", "maximize": 3}), ["true or false"]),
    ("objective.metric", _set("objective", {"metric": "Sharpe"}), ["allowed", "SR"]),
    ("fill_model", _set("fill_model", "queued"), ["allowed: cross, touch, queue"]),
    ("strategy.policy", _set("strategy.policy", "gridd"), ["did you mean 'grid'"]),
    ("sweep.skew", _set("strategy.params.skew", 0.1), ["both fixed", "and swept"]),
    ("sweep.derived.grid_interval", _both(_NO_STEP, _set("sweep.skew", None),
                                          _set("sweep.derived", {"grid_interval": "skew", "skew": "grid_interval"})),
     ["cycle: grid_interval -> skew -> grid_interval"]),
    ("sweep.derived.grid_interval", _both(_NO_STEP, _set("sweep.derived", {"grid_interval": "half_sprad"})),
     ["not a parameter", "did you mean 'half_spread'"]),
    ("sweep.derived.grid_interval", _both(_NO_STEP, _set("sweep.derived", {"grid_interval": "2 ** half_spread"})),
     ["cannot read"]),
    ("sweep.derived.grid_interval", _both(_NO_STEP, _set("sweep.derived", {"grid_interval": 3})),
     ["strategy.params"]),
    ("sweep.derived.skew", _set("sweep.derived", {"skew": "half_spread"}), ["both swept"]),
    ("sweep.derived.n_levels", _set("sweep.derived", {"n_levels": "half_spread"}), ["both fixed"]),
    ("sweep.derived.max_position", _both(_set("strategy.params.max_position", None),
                                         _set("sweep.derived", {"max_position": "-1*half_spread"})),
     ["derived value -1"]),
    ("sweep.joint[0].axes.half_spread",
     _set("sweep.joint", [{"random": {"n": 4}, "axes": {"half_spread": [0, 1]}}]), ["already swept"]),
    ("features[0].kind", _set("features", [{"kind": "imbalanse"}]), ["unknown feature kind"]),
    ("features[1].levels", _set("features", [{"kind": "mid"}, {"kind": "imbalance", "levels": "five"}]),
     ["whole number"]),
    ("features[0].instrument", _set("features", [{"kind": "mid", "instrument": "sopt"}]), ["did you mean 'spot'"]),
    ("features[0].window_s", _set("features", [{"kind": "realized_vol", "window_s": -1}]), ["> 0"]),
    ("features[1]", _set("features", [{"kind": "mid"}, {"kind": "mid"}]), ["twice"]),
    ("data.synthetic.hours", _set("data.synthetic.hours", -1), ["positive"]),
    ("data.quoted", _set("data.quoted", "perp"), ["allowed: futures, spot"]),
    ("data.files", _set("data.files", {"futures": {"path": "x.gz"}}), ["only with source: files"]),
    ("latency.file", _set("latency", {"entry_ms": 1, "file": "x.npz"}), ["not both"]),
    ("latency.file", _set("latency", {"file": "nowhere/lat.npz"}), ["no such file"]),
    ("metrics.resample_s", _set("metrics", {"resample_s": 0.15}), ["whole number of decision intervals"]),
    ("split.train_end_ms", _set("split", {"train_fraction": 0.5, "train_end_ms": 5}), ["not both"]),
    ("split.train_fraction", _set("split", {"train_fraction": 1.5}), ["<= 1"]),
    ("fees.taker_bps", _set("fees.taker_bps", None), ["required"]),
    ("fees", _set("fees", None), ["required"]),
    ("run.dtype", _set("run", {"dtype": "float16"}), ["float32"]),
    ("sweep", _set("sweep.skew", {"random": {"low": 0, "high": 1, "n": 100_000_000}}),
     ["300,000,000 lanes", "split it"]),
    ("sweep.skew.linspace.num", _set("sweep.skew", {"linspace": [0, 1, 10_000_000]}), ["at most 1,000,000"]),
    ("features", _set("strategy", {"policy": "avellaneda_stoikov", "params": {"order_qty": 1, "k": 1, "gamma": 1}}),
     ["reads feature 'realized_vol_60s'", "strategy.static.vol, the default", "features: imbalance_5"]),
    ("strategy.static.vol", _set("strategy", {"policy": "avellaneda_stoikov", "static": {"vol": "imbalance_6"},
                                              "params": {"order_qty": 1, "k": 1, "gamma": 1}}),
     ["did you mean 'imbalance_5'"]),
    ("strategy.static.signals[0]", _set("strategy", {"policy": "fair_value", "static": {"signals": ["spot.mid"]},
                                                     "params": {"order_notional": 1}}), ["reads feature 'spot.mid'"]),
    ("strategy.static.signal", _set("strategy.static", {"signal": ["imbalance_5"]}), ["grid' has no static options"]),
    ("strategy.static", _set("strategy", {"policy": "vamp_reference", "static": {"venue": "spot"},
                                          "params": {"order_qty": 1, "base_bps": 1}}),
     ["reads feature(s) spot.vamp_bps_5, spot.mid"]),
    ("strategy.params.beta_1", _set("strategy", {"policy": "fair_value", "static": {"signals": ["imbalance_5"]},
                                                 "params": {"order_notional": 1, "beta_1": 0.5}}),
     ["weighs strategy.static.signals[1]", "1 entry"]),
    ("strategy.static.venue", _set("strategy", {"policy": "vamp_reference", "static": {"venue": "bitmex"},
                                                "params": {"order_qty": 1, "base_bps": 1}}), ["or one of spot"]),
]


def mapping_keys(path: Path) -> set:
    return set(yaml.safe_load(path.read_text()))


def _write_base(tmp_path: Path, change) -> Path:
    d = copy.deepcopy(BASE)
    d["features"] = [{"kind": "imbalance", "levels": 5}]
    d["sweep"]["derived"] = {}
    change(d)
    if not d["sweep"].get("derived"):
        d["sweep"].pop("derived", None)
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.mark.parametrize("key,change,words", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_bad_input_names_file_and_key(tmp_path, key, change, words):
    path = _write_base(tmp_path, change)
    with pytest.raises(InputError) as info:
        load_experiment(path)
    exc = info.value
    text = str(exc)
    assert exc.key == key, text
    assert "x.yaml" in text and f"key '{key}'" in text, text
    if "." in key or "[" in key or key in mapping_keys(path):  # a missing top-level key has no line
        assert exc.line is not None and f"line {exc.line}" in text, text
    assert "\n" not in text, text
    for word in words:
        assert word in text, text


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: t\ndata:\n  source: synthetic\n sweep: [1, 2\n")
    with pytest.raises(InputError) as info:
        load_experiment(path)
    assert info.value.line == 4 and "broken.yaml" in str(info.value) and "YAML syntax error" in str(info.value)


def test_duplicate_yaml_key_names_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: t\nfees: {maker_bps: 0, taker_bps: 0}\nname: u\n")
    with pytest.raises(InputError) as info:
        load_experiment(path)
    assert info.value.line == 3 and info.value.key == "name" and "first at line 1" in str(info.value)


def test_scientific_notation_is_a_number(tmp_path):
    text = yaml.safe_dump(BASE, sort_keys=False).replace("order_qty: 0.01", "order_qty: 1e-2")
    assert "1e-2" in text
    path = tmp_path / "sci.yaml"
    path.write_text(text)
    assert load_experiment(path).strategy.params["order_qty"] == 0.01


def test_missing_data_file_and_env_paths(tmp_path, monkeypatch):
    d = copy.deepcopy(BASE)
    d["data"] = {"source": "files", "files": {"perp": {"path": "${MY_DATA:-data}/perp.gz"}}}
    (tmp_path / "data").mkdir()
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(InputError) as info:
        load_experiment(path)
    assert info.value.key == "data.files.perp.path" and "no such file" in str(info.value)
    (tmp_path / "data" / "perp.gz").write_bytes(b"")
    exp = load_experiment(path)  # relative to the YAML's folder; one instrument is the quoted one
    assert exp.data.quoted == "perp" and exp.data.files["perp"].paths == (str(tmp_path / "data" / "perp.gz"),)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "perp.gz").write_bytes(b"")
    monkeypatch.setenv("MY_DATA", str(other))
    assert load_experiment(path).data.files["perp"].paths == (str(other / "perp.gz"),)


def test_parse_errors_without_a_file_still_name_the_key():
    d = copy.deepcopy(BASE)
    d["sweep"]["half_spread"] = {"logspace": [0, 1, 0]}
    with pytest.raises(InputError, match=r"mine \(key 'sweep.half_spread.logspace.num'\)"):
        parse_experiment(d, "mine")
    with pytest.raises(InputError, match="expected a mapping"):
        parse_experiment(["not", "a", "mapping"], "mine")


def test_lane_index_out_of_range():
    with pytest.raises(IndexError):
        lane(exp_with(), 12)


def test_too_many_lanes_is_refused_before_building(monkeypatch):
    monkeypatch.setattr(grids, "MAX_LANES", 10)
    with pytest.raises(InputError, match="12 lanes"):
        exp_with()


def test_queue_fill_model_follows_the_verify_queue_model():
    exp = exp_with(fill_model="queue", queue_levels=6)
    assert exp.frame_spec().queue_levels == 6 and exp.verify.queue != "none"
    assert parse_experiment(exp.to_dict()) == exp
    assert exp_with(fill_model="cross").frame_spec().queue_levels == 0  # no queue columns otherwise
    with pytest.raises(InputError, match="verify.queue"):
        exp_with(fill_model="queue", verify={"queue": "none"})
    with pytest.raises(InputError, match="queue_levels"):
        exp_with(fill_model="queue", queue_levels=0)
