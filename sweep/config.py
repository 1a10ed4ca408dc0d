"""Experiment YAML -> a validated, typed :class:`Experiment` (DESIGN §5).

Every key is checked and unknown keys are errors, each a one-line :class:`InputError` naming the
file, the line and the full dotted key (``features[2].levels``, ``sweep.half_spread.linspace.stop``),
what was wrong and what is allowed.  Input paths are relative to the YAML file's folder and may
use ``${VAR}`` / ``${VAR:-default}``; ``run.out`` is relative to the working directory.

Schema (defaults shown; "required" keys have none)::

    name: demo                    # required; letters, digits, _ . -  (names the run folder)
    description: ""               # free text
    data:
      source: synthetic           # synthetic | files
      synthetic: {hours: 1.0, seed: 0, lead_lag_ms: 200.0}
                                  # any scalar field of data.synthetic.SynthConfig; instruments
                                  # 'futures' and 'spot'.  Or {days: 60, piece_hours: 1, ...}:
                                  # generated day by day, frames streamed into a store
      files:                      # source: files -- one entry per instrument, named freely
        futures: {path: ..., format: binance, tick_size: 0.1, lot_size: 0.001, symbol: BTCUSDT}
        spot: {path: ...}         # path: a file, a glob or a list: one instrument in time order
                                  # (Tardis/archive files of one day merge; several files are a
                                  # sequence, streamed); format/tick_size/lot_size/symbol optional
                                  # (detected/inferred); also instrument: {inverse: true,
                                  # contract_size: 10}, base_latency_ms (Binance captures; 0 =
                                  # hftbacktest's clock), feed_latency_ms (Binance archives,
                                  # required there), snapshot (hftbacktest npz initial snapshot)
      instrument: {}              # the quoted instrument's accounting override (as in a file entry)
      quoted: futures             # the instrument quoted; the others are signal instruments.
                                  # Default: futures (synthetic), the only one (files)
      stale_after_s: 60           # a book unchanged this long at a decision is stale: frames
                                  # flag those rows and a warning says how many
      on_stale: warn              # warn | error (stop when any source is stale)
    interval_ms: 100              # decision interval (ms)
    latency: {entry_ms: 10}       # constant order-entry latency (ms), or {file: order_latency.npz}
                                  # (hftbacktest order-latency rows, interpolated)
    fees: {maker_bps: -0.5, taker_bps: 7.0}   # required; bps of traded value, positive = cost,
                                              # negative = rebate (hftbacktest's convention)
    fill_model: cross             # cross (a trade through the price) | touch (a trade at it) |
                                  # queue (each order's queue ahead, with verify.queue's model)
    queue_levels: 4               # fill_model queue: ticks from the touch whose trades and sizes
                                  # the frames carry (orders deeper fill only outright)
    features: []                  # FeatureSpec dicts (features.py), named e.g. imbalance_5,
                                  # spot.rolling_return_300s; policies read them by name
    strategy:
      policy: grid                # required; a key of POLICIES
      params: {}                  # fixed parameters (POLICIES lists names, units, defaults);
                                  # null or absent = the default, .inf allowed for limits
      static: {}                  # the policy's static options, e.g. fair_value {signals:
                                  # [spot.rolling_return_300s]}; every feature they name must
                                  # be in `features`
    sweep: {}                     # swept parameters, see below; empty = one lane
    objective: {metric: SR, maximize: true}     # maximize defaults per metric (METRICS); also
                                  # rank_on: train | mean | quantile (over folds), quantile: 0.25,
                                  # neighbourhood: 0 (grid steps; robust ranking), see selection.py
    constraints: {min_trades: null, max_drawdown: null}
                                  # on the train part: at least min_trades fills; MaxDrawdown
                                  # (fraction of book_size) at most max_drawdown
    split: {train_fraction: 1.0}  # or {train_end_ms: <epoch ms, local clock>}; plus optional
                                  # walk_forward: {folds: K, anchored: false} or k_fold: {folds: K}
                                  # (blocks of the train part, selection.py); ranking on train,
                                  # metrics reported for train and test
    verify:                       # exact replay (mmsweep verify) of the top K + a random sample
      {top_k: 20, sample: 50, seed: 0,
       queue: power, queue_n: 2,  # queue model: none | risk_averse | power | power2 | power3 | log | log2
       partial_fills: false,      # partial-fill exchange
       response_ms: null,         # response latency; null = the entry latency (or the latency file's)
       cross_per_message: true,   # judge best-price crosses after whole messages (false: every row)
       lockstep: 8, processes: 0, # candidates per pass over the events; worker processes (0: one per CPU)
       frontier: 4}               # replay the fast top top_k x frontier lanes (+ the sample)
    metrics: {resample_s: 1.0, book_size: 100000, trading_days_per_year: 252}
                                  # equity resample period (s, a multiple of the interval); book
                                  # size (the PnL currency: quote currency, the coin for inverse
                                  # contracts) for Return/MaxDrawdown; SR annualisation
    run: {chunk_lanes: 8192, dtype: float32, out: runs,
          max_levels: null,       # order slots per side in the kernel's arrays; null = the widest
                                  # lane's n_levels (an exported lane pins its sweep's value)
          backend: auto,          # auto (numba on a CPU, jax on a GPU) | jax | numba
          time_chunk_rows: null}  # frame rows per kernel call, lane state carried (streamed
                                  # sources: 2^20 when null; in-memory frames: a part at once)
    fit: {horizon_s: 10, params: [beta]}   # optional: coefficients regressed on the train part
                                  # before the sweep (fair_value / linear_alpha), see fit.py
    tune: {params: [skew]}        # optional: gradient tuning by mmsweep tune, see tune_config.py
    provenance: {}                # informational, ignored when running: where an exported
                                  # experiment came from (mmsweep.sweep.export documents it)

Sweep section: each key is a policy parameter with one of ::

    half_spread: {list: [1, 2, 4]}              # also the bare list [1, 2, 4]
    half_spread: {linspace: [1, 20, 16]}        # start, stop, num (or {start:, stop:, num:})
    skew: {logspace: [-2, 0, 16]}               # base-10 exponents start, stop, and num
    beta: {random: {low: 0, high: 2, n: 1000, seed: 1, log: false}}   # or sobol: {...}

plus two reserved keys: ``joint`` (samples over several axes at once, zipped)::

    joint:
      - sobol: {n: 1024, seed: 7}               # or random: {n:, seed:}
        axes: {beta: {low: 0, high: 2}, relative_skew_bps: {low: 0.1, high: 10, log: true}}

and ``derived`` (ties computed per lane, after the axes; chains allowed, cycles rejected)::

    derived: {grid_interval: half_spread, skew: "0.1*half_spread"}   # NAME, NUM*NAME, NAME*NUM, NAME/NUM

Lanes are the product of the blocks (each grid axis, each sample), see :mod:`mmsweep.sweep.grids`.
A parameter is fixed, swept or derived -- exactly one; values outside a parameter's range are
rejected at load time.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from . import grids
from .errors import InputError
from .features import KINDS as FEATURE_KINDS
from .features import FeatureSpec
from .features import _PARAMS as _FEATURE_PARAMS
from ..kernels.policies import POLICIES as _KERNEL_POLICIES
from ..kernels.policies import base as _policy_base
from .frames import FrameSpec, LatencySpec
from .limits import MAX_LATENCY_MS

# --------------------------------------------------------------------------------------------
# Policy registry: what the experiment may set for each quoting policy.  Each policy declares its
# parameters (default, unit, description, allowed range) and static options once, in its own
# module (mmsweep.kernels.policies.*: PARAMS and STATIC); this is a view of those declarations.
# Units: "ticks" are price ticks of the quoted instrument; "bps" basis points of the price
# named; "qty units" the instrument's quantity unit (BTC); "orders" multiples of order_qty;
# "quote currency" e.g. USDT.  Positions are signed (long > 0).  The formulas live in each
# policy module's docstring.
# --------------------------------------------------------------------------------------------

Param = _policy_base.Param
StaticOption = _policy_base.Static


@dataclasses.dataclass(frozen=True)
class Policy:
    """A policy's parameters (in lane-table order) and static options."""

    doc: str
    params: dict[str, Param]
    static: dict[str, StaticOption] = dataclasses.field(default_factory=dict)

    def active(self, static: dict[str, Any]) -> list[str]:
        """Parameters that may be set under ``static`` (slot parameters need their feature)."""
        return [n for n, p in self.params.items() if p.slot is None or len(static[p.slot[0]]) > p.slot[1]]


def _policy_view(module) -> Policy:
    doc = (module.__doc__ or "").strip().splitlines()[0].rstrip(".")
    return Policy(doc=doc, params=dict(module.PARAMS), static=dict(module.STATIC))


POLICIES: dict[str, Policy] = {name: _policy_view(module) for name, module in _KERNEL_POLICIES.items()}

#: Objective metrics and whether larger is better (the default of objective.maximize):
#: hftbacktest's summary columns, then kernels.metrics' extras (PnL, Fees, TradingValue in quote
#: currency; MaxAbsPosition in qty units).
METRICS: dict[str, bool] = {
    "SR": True, "Sortino": True, "Return": True, "MaxDrawdown": False, "DailyNumberOfTrades": True,
    "DailyTurnover": True, "ReturnOverMDD": True, "ReturnOverTrade": True, "MaxPositionValue": False,
    "PnL": True, "Fees": False, "NumberOfTrades": True, "TradingValue": True, "MaxAbsPosition": False,
    "MaxPositionNotional": False,
}
#: Largest grid axis (its values are held in the config); samples are bounded by grids.MAX_LANES only.
MAX_AXIS_VALUES = 1_000_000
# Bounds of values whose size reaches an allocation or an int64 (beyond them a number is a typo,
# and the error says so instead of an overflow or an out-of-memory far downstream).
MAX_SPAN_S = 366 * 86_400.0  # intervals, resample periods, feature windows: at most a year
MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01
MAX_FEE_BPS = 1_000.0  # 10 % of traded value
MAX_QUEUE_N = 20.0
FILL_MODELS = ("cross", "touch", "queue")
DTYPES = ("float32", "float64")
BACKENDS = ("auto", "jax", "numba")
DATA_SOURCES = ("synthetic", "files")
FILE_FORMATS = ("binance", "tardis", "hftbacktest", "mmsweep")
AXIS_KINDS = ("list", "linspace", "logspace", "random", "sobol")
SAMPLERS = ("random", "sobol")
TOP_KEYS = ("name", "description", "data", "interval_ms", "latency", "fees", "fill_model", "queue_levels", "features",
            "strategy", "sweep", "objective", "constraints", "split", "verify", "metrics", "run", "provenance", "fit",
            "tune")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TIE_RE = re.compile(  # NAME, NUM*NAME, NAME*NUM, NAME/NUM -- parsed, never eval'd
    rf"^\s*(?:(?P<pre>{_NUM})\s*\*\s*)?(?P<name>[A-Za-z_]\w*)\s*(?:(?P<op>[*/])\s*(?P<post>{_NUM}))?\s*$")
_REQUIRED = object()


# --------------------------------------------------------------------------------------------
# Typed configuration
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileSource:
    """One instrument read from files: ``paths`` absolute; None options are detected/inferred."""

    paths: tuple[str, ...]
    format: str | None = None
    tick_size: float | None = None
    lot_size: float | None = None
    symbol: str | None = None
    # a file sequence / instrument facts (datasource.py, data/sequence.py, data/instruments.py)
    instrument: dict[str, Any] | None = None  # {inverse: bool, contract_size: quote ccy per contract}
    base_latency_ns: int | None = None  # Binance captures: smallest feed latency after the clock fix
    feed_latency_ns: int | None = None  # Binance archives: the assumed feed latency (no receive times)
    snapshot: str | None = None  # hftbacktest .npz: initial snapshot applied before the first file

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in (("tick_size", self.tick_size), ("lot_size", self.lot_size),
                                  ("symbol", self.symbol), ("base_latency_ns", self.base_latency_ns),
                                  ("feed_latency_ns", self.feed_latency_ns)) if v is not None}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the market comes from.  ``synthetic``: resolved SynthConfig scalar fields;
    ``files``: instrument name -> source; ``quoted``: the instrument the strategy quotes."""

    source: str
    quoted: str
    synthetic: dict[str, Any] | None = None
    files: dict[str, FileSource] | None = None
    stale_after_s: float = 60.0  # a book unchanged this long (s) is stale at a decision
    on_stale: str = "warn"  # warn | error
    instrument: dict[str, Any] | None = None  # the quoted instrument's override: inverse, contract_size

    @property
    def instruments(self) -> tuple[str, ...]:
        if self.files is not None:
            return tuple(self.files)
        from .data.synthetic import SynthConfig

        return tuple(i.name for i in SynthConfig().instruments)

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(n for n in self.instruments if n != self.quoted)

    def load(self):
        """``(quoted events, {signal name: events})``: generate or read the market (a sequence of
        files or synthetic days joined in memory; see :mod:`mmsweep.sweep.datasource`)."""
        from .datasource import load

        return load(self)

    @property
    def streamed(self) -> bool:
        """A sequence of pieces (several files, synthetic days): frames are built into a store."""
        from .datasource import is_streamed

        return is_streamed(self)


@dataclasses.dataclass(frozen=True)
class Latency:
    """Order-entry latency: a constant ``entry_ns`` or an order-latency ``file`` (absolute)."""

    entry_ns: int | None = 10_000_000
    file: str | None = None

    def spec(self) -> LatencySpec:
        if self.file is None:
            return LatencySpec(entry_ns=self.entry_ns)
        from .data.hftnpz import read_order_latency

        return LatencySpec(rows=read_order_latency(self.file), source=self.file)


@dataclasses.dataclass(frozen=True)
class Fees:
    """Fees in bps of traded value; positive = cost, negative = rebate."""

    maker_bps: float
    taker_bps: float


@dataclasses.dataclass(frozen=True)
class Strategy:
    """The policy, its fixed parameters (given or defaulted; not swept, not derived) and its
    resolved static options (feature-name lists as tuples)."""

    policy: str
    params: dict[str, float]
    static: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Axis:
    """A grid axis: ``values`` in parameter units; ``args`` the YAML arguments (for to_dict)."""

    name: str
    kind: str  # list | linspace | logspace
    values: tuple[float, ...]
    args: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.values)


@dataclasses.dataclass(frozen=True)
class Range:
    """A sampled axis: uniform (or log-uniform) on ``[low, high)``."""

    name: str
    low: float
    high: float
    log: bool = False


@dataclasses.dataclass(frozen=True)
class Sample:
    """``n`` joint points over ``ranges`` (zipped).  ``inline``: written on one axis, not in ``joint``."""

    method: str  # random | sobol
    n: int
    seed: int
    ranges: tuple[Range, ...]
    inline: bool = False

    @property
    def size(self) -> int:
        return self.n


@dataclasses.dataclass(frozen=True)
class Tie:
    """A derived parameter: ``target = factor * source`` in every lane; ``text`` as written."""

    target: str
    source: str
    factor: float
    text: str


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Blocks in YAML order (their product gives the lanes) and ties in dependency order."""

    blocks: tuple[Axis | Sample, ...] = ()
    derived: tuple[Tie, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Swept parameter names (not derived), in block order."""
        out: list[str] = []
        for b in self.blocks:
            out += [r.name for r in b.ranges] if isinstance(b, Sample) else [b.name]
        return tuple(out)


@dataclasses.dataclass(frozen=True)
class Objective:
    """The ranking metric; ``rank_on``, ``quantile`` and ``neighbourhood`` choose how lanes are
    ranked on it (:mod:`mmsweep.sweep.selection`)."""

    metric: str = "SR"
    maximize: bool = True
    rank_on: str = "train"  # train | mean | quantile (of the fold test objectives)
    quantile: float = 0.25
    neighbourhood: int = 0  # grid steps of the robust (smoothed) ranking; 0 = off


@dataclasses.dataclass(frozen=True)
class Constraints:
    """On the train part: ``min_trades`` fills at least; MaxDrawdown (fraction) at most ``max_drawdown``."""

    min_trades: int | None = None
    max_drawdown: float | None = None


@dataclasses.dataclass(frozen=True)
class Split:
    """Train part: the first ``train_fraction`` of frame rows, or rows before ``train_end_ms`` (epoch ms)."""

    train_fraction: float | None = 1.0
    train_end_ms: int | None = None
    folds: Any = None  # selection.Folds: walk-forward / k-fold blocks of the train part


@dataclasses.dataclass(frozen=True)
class Verify:
    """Exact-engine verification: which lanes, and the engine's assumptions (see
    :class:`mmsweep.replay.ReplayConfig`).  ``response_ms`` None = the entry latency (constant
    latency) or the latency file's response column."""

    top_k: int = 20
    sample: int = 50
    seed: int = 0
    queue: str = "power"
    queue_n: float = 2.0
    partial_fills: bool = False
    response_ms: float | None = None
    cross_per_message: bool = True
    lockstep: int = 8
    processes: int = 0  # 0 = one per CPU
    frontier: int = 4  # replay the fast top K x frontier (so the exact top K among them can be found)


@dataclasses.dataclass(frozen=True)
class Metrics:
    """Equity resample period (s), book size (quote currency) dividing Return/MaxDrawdown/
    DailyTurnover, and the SR/Sortino annualisation (hftbacktest's default 252)."""

    resample_s: float = 1.0
    book_size: float = 100_000.0
    trading_days_per_year: float = 252.0


@dataclasses.dataclass(frozen=True)
class Run:
    chunk_lanes: int = 8192
    dtype: str = "float32"
    out: str = "runs"
    max_levels: int | None = None  # order slots per side; None = the widest lane's n_levels
    backend: str = "auto"  # BACKENDS; "auto": numba on a CPU, jax on a GPU
    time_chunk_rows: int | None = None  # frame rows per kernel call (state carried); None = a part at once


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A validated experiment.  Build with :func:`load_experiment` or :func:`parse_experiment`."""

    name: str
    data: DataConfig
    interval_ns: int
    latency: Latency
    fees: Fees
    fill_model: str
    features: tuple[FeatureSpec, ...]
    strategy: Strategy
    sweep: Sweep
    objective: Objective
    constraints: Constraints
    split: Split
    verify: Verify
    metrics: Metrics
    run: Run
    description: str = ""
    source: str = dataclasses.field(default="", compare=False)
    provenance: dict | None = dataclasses.field(default=None, compare=False)  # informational only
    fit: Any = None  # fit.Fit: coefficients regressed on the train part before the sweep
    tune: Any = None  # tune_config.Tune: what mmsweep tune optimises (not part of the run's hash)
    queue_levels: int = 4  # fill_model queue: ticks from the touch the frames carry per side

    @property
    def policy(self) -> Policy:
        return POLICIES[self.strategy.policy]

    @property
    def param_names(self) -> list[str]:
        """Every lane parameter in lane-table order (the policy registry's order)."""
        return list(self.policy.params)

    def frame_spec(self) -> FrameSpec:
        """Interval, latency (reads the latency file, if any) and features for :func:`build_frames`."""
        return FrameSpec(interval_ns=self.interval_ns, latency=self.latency.spec(), features=self.features,
                         stale_after_ns=int(round(self.data.stale_after_s * 1e9)), on_stale=self.data.on_stale,
                         queue_levels=self.queue_levels if self.fill_model == "queue" else 0)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration (defaults filled, paths absolute), plain JSON/YAML types;
        ``parse_experiment(exp.to_dict())`` gives an equal experiment."""
        return _to_dict(self)


# --------------------------------------------------------------------------------------------
# Reading YAML with line numbers
# --------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe loader that also reads ``1e-4`` as a float (YAML 1.2; PyYAML's 1.1 reads a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


#: bounds that keep reading an experiment fast and small whatever the file holds
MAX_YAML_BYTES = 32 << 20  # a million-value list written out is ~10 MB
MAX_YAML_DEPTH = 64  # nesting levels of mappings/lists (the schema needs 5)
MAX_YAML_VALUES = 4_000_000  # values once aliases are expanded (an alias "bomb" doubles per level)


def _check_depth(text: str, source: str) -> None:
    """Refuse nesting deeper than ``MAX_YAML_DEPTH`` before composing (PyYAML's composer
    recurses once per level and would die in a RecursionError); linear in the text."""
    depth = 0
    opening = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
               yaml.FlowSequenceStartToken)
    closing = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
    for token in yaml.scan(text, Loader=_Loader):
        if isinstance(token, opening):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise InputError(f"nesting deeper than {MAX_YAML_DEPTH} levels", source=source,
                                 line=token.start_mark.line + 1)
        elif isinstance(token, closing):
            depth -= 1


def _expanded_size(node: yaml.Node, source: str, memo: dict[int, int] | None = None) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (computed once per node,
    so an alias bomb costs linear time); refuses more than ``MAX_YAML_VALUES``."""
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a node met again while being sized is a recursive alias: PyYAML refuses those
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    size = 1 + sum(_expanded_size(c, source, memo) for c in children)
    if size > MAX_YAML_VALUES:
        raise InputError(f"the YAML expands to more than {MAX_YAML_VALUES:,} values (aliases repeating aliases?)",
                         source=source, line=node.start_mark.line + 1)
    memo[id(node)] = size
    return size


def _line_index(node: yaml.Node, source: str, prefix: str = "", out: dict | None = None,
                seen_nodes: set[int] | None = None) -> dict[str, int]:
    """Dotted key -> 1-based line, for every key and list item; rejects duplicate keys (PyYAML
    would silently keep the last one).  A node reached again through an alias is not walked
    again: its keys keep the lines of the anchor (and an alias bomb stays linear)."""
    out = {} if out is None else out
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return out
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            path = f"{prefix}.{key}" if prefix else key
            if key in seen:
                raise InputError(f"duplicate key (first at line {seen[key]})", source=source, line=line, key=path)
            seen[key] = line
            out[path] = line
            _line_index(value_node, source, path, out, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            out[path] = item.start_mark.line + 1
            _line_index(item, source, path, out, seen_nodes)
    return out


def _read_yaml(text: str, source: str) -> tuple[Any, dict[str, int]]:
    loader = _Loader(text)
    try:
        _check_depth(text, source)
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node, source)
        lines = _line_index(node, source) if node is not None else {}
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "unreadable"
        if mark is not None:
            what += f" (column {mark.column + 1})"
        if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
            # e.g. an unclosed '[': the problem shows up lines later than the cause
            what += f", {exc.context} started at line {exc.context_mark.line + 1}"
        raise InputError(f"YAML syntax error: {what}", source=source,
                         line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {exc}", source=source) from None
    finally:
        loader.dispose()
    return data, lines


def _line_of(key: str | None, lines: dict[str, int]) -> int | None:
    """The line of ``key`` or of its nearest written parent (a key may name a missing child)."""
    while key:
        if key in lines:
            return lines[key]
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else ""
    return None


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and validate an experiment YAML file (see the module docstring for the schema)."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_YAML_BYTES:
            raise InputError(f"the experiment file is {size / 2**20:,.0f} MiB; an experiment is at most "
                             f"{MAX_YAML_BYTES >> 20} MiB (sample large axes with random or sobol)", source=source)
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the experiment ({exc})", source=source) from None
    data, lines = _read_yaml(text, source)
    try:
        return parse_experiment(data, source, base_dir=Path(path).resolve().parent)
    except InputError as exc:
        if exc.line is not None or exc.key is None:
            raise
        raise InputError(exc.message, source=exc.source or source, line=_line_of(exc.key, lines),
                         key=exc.key) from None


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Ctx:
    source: str
    base_dir: Path

    def fail(self, key: str, message: str) -> InputError:
        return InputError(message, source=self.source, key=key or None)


def _show(value: Any) -> str:
    """A value as the user wrote it, with its YAML kind."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"true/false ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"text {text}" if isinstance(value, str) else text


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _join(prefix: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    return f"{prefix}.{name}" if prefix else name


class _Section:
    """A mapping being read: rejects unknown keys up front, then hands out typed values."""

    def __init__(self, ctx: _Ctx, value: Any, key: str, allowed: Sequence[str], what: str = "") -> None:
        self.ctx, self.key = ctx, key
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ctx.fail(key, f"expected a mapping{(' (' + what + ')') if what else ''} with keys "
                                f"{', '.join(allowed)}; got {_show(value)}")
        for k in value:
            if not isinstance(k, str):
                raise ctx.fail(key, f"keys must be text, got {_show(k)}")
            if k not in allowed:
                raise ctx.fail(_join(key, k), f"unknown key{_hint(k, allowed)}; allowed here: {', '.join(allowed)}")
        self.value = value

    def k(self, name: str) -> str:
        return _join(self.key, name)

    def has(self, name: str) -> bool:
        return self.value.get(name) is not None

    def raw(self, name: str, default: Any = None) -> Any:
        value = self.value.get(name)
        return default if value is None else value

    def _get(self, name: str, default: Any, what: str) -> tuple[Any, bool]:
        """``(value, given)``: the written value, or the default (a missing required key fails)."""
        value = self.value.get(name)
        if value is None:
            if default is _REQUIRED:
                raise self.ctx.fail(self.k(name), f"required ({what})")
            return default, False
        return value, True

    def number(self, name: str, default: Any = _REQUIRED, *, what: str, low: float = -math.inf,
               high: float = math.inf, open_low: bool = False, open_high: bool = False) -> float:
        value, given = self._get(name, default, what)
        if not given:
            return value
        return _number(self.ctx, self.k(name), value, what=what, low=low, high=high, open_low=open_low,
                       open_high=open_high)

    def integer(self, name: str, default: Any = _REQUIRED, *, what: str, low: int | None = None) -> int:
        value, given = self._get(name, default, what)
        if not given:
            return value
        return _integer(self.ctx, self.k(name), value, what=what, low=low)

    def text(self, name: str, default: Any = _REQUIRED, *, what: str, choices: Sequence[str] = ()) -> str:
        value, given = self._get(name, default, what)
        if not given:
            return value
        if not isinstance(value, str):
            allowed = f"one of {', '.join(choices)}" if choices else "text"
            raise self.ctx.fail(self.k(name), f"expected {allowed} ({what}), got {_show(value)}")
        if choices and value not in choices:
            raise self.ctx.fail(self.k(name), f"unknown value '{value}'{_hint(value, choices)}; allowed: "
                                              f"{', '.join(choices)}")
        return value

    def boolean(self, name: str, default: Any = _REQUIRED, *, what: str) -> bool:
        value, _ = self._get(name, default, what)
        if not isinstance(value, bool):
            raise self.ctx.fail(self.k(name), f"expected true or false ({what}), got {_show(value)}")
        return value


def _number(ctx: _Ctx, key: str, value: Any, *, what: str, low: float = -math.inf, high: float = math.inf,
            open_low: bool = False, open_high: bool = False, allow_inf: bool = False) -> float:
    """A finite number (``allow_inf``: or +-inf; never NaN, never a boolean) in range, as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ctx.fail(key, f"expected a number ({what}), got {_show(value)}")
    value = float(value)
    bad = (math.isnan(value) or (math.isinf(value) and not allow_inf) or value < low or value > high
           or (open_low and value <= low) or (open_high and value >= high))
    if bad:
        rng = []
        if low > -math.inf:
            rng.append(f"{'>' if open_low else '>='} {low:g}")
        if high < math.inf:
            rng.append(f"{'<' if open_high else '<='} {high:g}")
        raise ctx.fail(key, f"must be a finite number{' ' + ' and '.join(rng) if rng else ''} ({what}), "
                            f"got {value:g}")
    return value


def _integer(ctx: _Ctx, key: str, value: Any, *, what: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.fail(key, f"expected a whole number ({what}), got {_show(value)}")
    if low is not None and value < low:
        raise ctx.fail(key, f"must be >= {low} ({what}), got {value}")
    return int(value)


_VAR_RE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def _path(ctx: _Ctx, key: str, value: Any, *, must_exist: bool = True) -> str:
    """An input path: ``${VAR}`` / ``${VAR:-default}`` / ``$VAR`` expanded, ``~`` expanded,
    relative to the YAML file's folder; absolute string."""
    if not isinstance(value, str) or not value.strip():
        raise ctx.fail(key, f"expected a file path, got {_show(value)}")

    def expand(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in os.environ:
            return os.environ[name]
        if m.group(2) is not None:
            return m.group(2)
        raise ctx.fail(key, f"environment variable {name} is not set (write ${{{name}:-default}} for a fallback)")

    path = Path(os.path.expanduser(_VAR_RE.sub(expand, value)))
    path = path if path.is_absolute() else ctx.base_dir / path
    path = Path(os.path.normpath(path))
    if must_exist and not path.is_file():
        raise ctx.fail(key, f"no such file: {path}")
    return str(path)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _synthetic_fields() -> dict[str, Any]:
    """SynthConfig's scalar fields and their defaults (the keys allowed in data.synthetic)."""
    from .data.synthetic import SynthConfig

    return {f.name: f.default for f in dataclasses.fields(SynthConfig)
            if isinstance(f.default, (bool, int, float)) and f.name != "instruments"}


def _parse_synthetic(ctx: _Ctx, raw: Any, key: str) -> dict[str, Any]:
    from .data.synthetic import SynthConfig

    fields = _synthetic_fields()
    sec = _Section(ctx, raw, key, list(fields) + ["days", "piece_hours"], "synthetic market settings")
    out = {}
    # days: a market of that many days generated day by day and piece by piece (data/synthetic_stream.py)
    if sec.has("days"):
        out["days"] = sec.number("days", None, what="days of synthetic market, generated piece by piece", low=0,
                                 open_low=True, high=3660)
        out["piece_hours"] = sec.number("piece_hours", 1.0, what="hours of events generated at a time", low=0,
                                        open_low=True, high=744)
        if sec.has("hours"):
            raise ctx.fail(sec.k("hours"), "give hours or days, not both")
    for name, default in fields.items():
        what = f"SynthConfig.{name}"
        if isinstance(default, bool):
            out[name] = sec.boolean(name, default, what=what)
        elif isinstance(default, int):
            out[name] = sec.integer(name, default, what=what)
        else:
            out[name] = sec.number(name, default, what=what)
    if "days" in out:
        out.pop("hours")  # a market of days: hours does not apply (and is not written back)
    try:
        SynthConfig(**{k: v for k, v in out.items() if k not in ("days", "piece_hours")})
    except InputError as exc:  # re-key SynthConfig's own checks to the YAML key
        raise ctx.fail(_join(key, exc.key) if exc.key else key, exc.message) from None
    return out


def _paths(ctx: _Ctx, key: str, value: Any) -> tuple[str, ...]:
    """A file, a glob (sorted by name) or a list of either, resolved and expanded."""
    from .data.sequence import _GLOB_CHARS

    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for i, item in enumerate(items):
        k = _join(key, i) if isinstance(value, list) else key
        if isinstance(item, str) and _GLOB_CHARS.search(item):
            pattern = _path(ctx, k, item, must_exist=False)
            if not Path(pattern).is_file():
                import glob

                hits = sorted(p for p in glob.glob(pattern) if Path(p).is_file())
                if not hits:
                    raise ctx.fail(k, f"the pattern {pattern} matches no file")
                out += hits
                continue
            out.append(pattern)
        else:
            out.append(_path(ctx, k, item))
    if len(set(out)) != len(out):
        dup = next(p for p in out if out.count(p) > 1)
        raise ctx.fail(key, f"the file {dup} is listed twice")
    return tuple(out)


def _parse_file_source(ctx: _Ctx, raw: Any, key: str) -> FileSource:
    sec = _Section(ctx, raw, key, ("path", "format", "tick_size", "lot_size", "symbol", "instrument",
                                   "base_latency_ms", "feed_latency_ms", "snapshot"), "one instrument's files")
    paths = sec.raw("path")
    if paths is None:
        raise ctx.fail(sec.k("path"), "required (a data file, a glob, or a list of files of one instrument in time "
                                      "order)")
    if isinstance(paths, list) and not paths:
        raise ctx.fail(sec.k("path"), "the list of files is empty")
    resolved = _paths(ctx, sec.k("path"), paths)
    fmt = sec.text("format", None, what="source format; default: detected", choices=FILE_FORMATS)
    base = sec.number("base_latency_ms", None, what="Binance captures: the smallest feed latency after the clock "
                      "correction, ms (0 = hftbacktest's converter)", low=0, high=MAX_LATENCY_MS)
    feed = sec.number("feed_latency_ms", None, what="Binance archives: the feed latency to assume, ms", low=0,
                      high=MAX_LATENCY_MS)
    snapshot = sec.raw("snapshot")
    return FileSource(
        paths=resolved,
        format=fmt,
        tick_size=sec.number("tick_size", None, what="price increment, quote currency", low=0, open_low=True),
        lot_size=sec.number("lot_size", None, what="quantity increment, base units", low=0, open_low=True),
        symbol=sec.text("symbol", None, what="symbol to keep when a file holds several"),
        instrument=_parse_instrument(ctx, sec.raw("instrument"), sec.k("instrument")),
        base_latency_ns=None if base is None else _ms_to_ns(ctx, sec.k("base_latency_ms"), base),
        feed_latency_ns=None if feed is None else _ms_to_ns(ctx, sec.k("feed_latency_ms"), feed),
        snapshot=None if snapshot is None else _path(ctx, sec.k("snapshot"), snapshot),
    )


def _parse_instrument(ctx: _Ctx, raw: Any, key: str) -> dict[str, Any] | None:
    """``instrument: {inverse: true, contract_size: 100}``: linear/inverse accounting and the
    contract size (quote currency per contract), overriding what is inferred from the data."""
    if raw is None:
        return None
    sec = _Section(ctx, raw, key, ("inverse", "contract_size"), "the instrument's accounting")
    out: dict[str, Any] = {}
    if sec.has("inverse"):
        out["inverse"] = sec.boolean("inverse", False, what="coin-margined (inverse) contract: PnL in the coin")
    if sec.has("contract_size"):
        out["contract_size"] = sec.number("contract_size", None, what="quote currency per contract (inverse), or "
                                          "per qty x price (linear)", low=0, open_low=True)
    return out or None


def _parse_data(ctx: _Ctx, raw: Any) -> DataConfig:
    sec = _Section(ctx, raw, "data", ("source", "synthetic", "files", "quoted", "stale_after_s", "on_stale",
                                      "instrument"), "the market data")
    source = sec.text("source", "synthetic", what="where the market comes from", choices=DATA_SOURCES)
    other = "files" if source == "synthetic" else "synthetic"
    if sec.has(other):
        raise ctx.fail(sec.k(other), f"only with source: {other} (source is {source})")
    if source == "synthetic":
        synthetic = _parse_synthetic(ctx, sec.raw("synthetic"), sec.k("synthetic"))
        cfg = DataConfig("synthetic", "", synthetic=synthetic)
        default_quoted = cfg.instruments[0]
    else:
        raw_files = sec.raw("files")
        if not isinstance(raw_files, dict) or not raw_files:
            raise ctx.fail(sec.k("files"), "required with source: files: a mapping of instrument name -> "
                                           "{path: ..., tick_size: ..., ...}")
        files = {}
        for name, spec in raw_files.items():
            if not isinstance(name, str) or not _IDENT_RE.match(name):
                raise ctx.fail(_join(sec.k("files"), str(name)),
                               "an instrument name must be letters, digits and _ (not starting with a digit)")
            files[name] = _parse_file_source(ctx, spec, _join(sec.k("files"), name))
        cfg = DataConfig("files", "", files=files)
        default_quoted = next(iter(files)) if len(files) == 1 else _REQUIRED
    names = cfg.instruments
    quoted = sec.text("quoted", default_quoted, what=f"the quoted instrument, one of {', '.join(names)}",
                      choices=names)
    stale_after_s = sec.number("stale_after_s", 60.0, what="a book unchanged this long is stale, s", low=0,
                               open_low=True, high=MAX_SPAN_S)
    on_stale = sec.text("on_stale", "warn", what="what a stale source does", choices=("warn", "error"))
    instrument = _parse_instrument(ctx, sec.raw("instrument"), sec.k("instrument"))
    if instrument and cfg.files is not None and cfg.files[quoted].instrument:
        raise ctx.fail(sec.k("instrument"), f"the quoted instrument's file entry ({quoted}) has an instrument section "
                                            "already; give it in one place")
    return dataclasses.replace(cfg, quoted=quoted, stale_after_s=stale_after_s, on_stale=on_stale,
                               instrument=instrument)


def _ms_to_ns(ctx: _Ctx, key: str, ms: float) -> int:
    ns = ms * 1e6
    if abs(ns - round(ns)) > 1e-9 * max(1.0, abs(ns)):  # tolerate float noise, not fractions of a ns
        raise ctx.fail(key, f"{ms:g} ms is not a whole number of ns")
    return int(round(ns))


def _parse_latency(ctx: _Ctx, raw: Any) -> Latency:
    sec = _Section(ctx, raw, "latency", ("entry_ms", "file"), "order-entry latency")
    if sec.has("entry_ms") and sec.has("file"):
        raise ctx.fail(sec.k("file"), "give either entry_ms or file, not both")
    if sec.has("file"):
        return Latency(entry_ns=None, file=_path(ctx, sec.k("file"), sec.raw("file")))
    ms = sec.number("entry_ms", 10.0, what="constant order-entry latency, ms", low=0, high=MAX_LATENCY_MS)
    return Latency(entry_ns=_ms_to_ns(ctx, sec.k("entry_ms"), ms))


def _parse_features(ctx: _Ctx, raw: Any, data: DataConfig) -> tuple[FeatureSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ctx.fail("features", f"expected a list of features like {{kind: imbalance, levels: 5}}, got {_show(raw)}")
    out: list[FeatureSpec] = []
    for i, item in enumerate(raw):
        where = f"features[{i}]"
        if isinstance(item, dict):
            _check_feature_types(ctx, item, where, data)
            # seconds as floats: lag_s 1 and 1.0 must give the same frames cache key
            item = {k: float(v) if k in ("lag_s", "window_s", "shift_s") else v for k, v in item.items()}
        elif not isinstance(item, str):
            raise ctx.fail(where, f"expected a mapping like {{kind: imbalance, levels: 5}} or a kind name, "
                                  f"got {_show(item)}")
        try:
            spec = FeatureSpec.parse(item, where=where)
        except InputError as exc:
            raise ctx.fail(exc.key or where, exc.message) from None
        if spec.instrument == data.quoted:  # the quoted instrument is the default: one spelling
            spec = dataclasses.replace(spec, instrument=None)
        if any(f.name == spec.name for f in out):
            raise ctx.fail(where, f"feature {spec.name} is listed twice")
        out.append(spec)
    return tuple(out)


def _check_feature_types(ctx: _Ctx, item: dict, where: str, data: DataConfig) -> None:
    """Type checks FeatureSpec.parse leaves to the dataclass (it assumes well-typed YAML)."""
    kind = item.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise ctx.fail(f"{where}.kind", f"expected one of {', '.join(FEATURE_KINDS)}, got {_show(kind)}")
    for name, value in item.items():
        key = f"{where}.{name}"
        if name in ("lag_s", "window_s", "shift_s"):
            _number(ctx, key, value, what="seconds")
        elif name == "levels":
            _integer(ctx, key, value, what="book levels", low=1)
        elif name == "instrument" and value is not None:
            if value not in data.instruments:
                raise ctx.fail(key, f"unknown instrument {_show(value)}{_hint(str(value), data.instruments)}; "
                                    f"instruments: {', '.join(data.instruments)}")


def _unknown_param(ctx: _Ctx, key: str, name: Any, policy_name: str, policy: Policy, active: Sequence[str],
                   static: dict[str, Any], extra: Sequence[str] = ()) -> InputError:
    """The error for a name the policy does not take (or not under its static options)."""
    p = policy.params.get(name) if isinstance(name, str) else None
    if p is not None and p.slot is not None:
        opt, j = p.slot
        return ctx.fail(key, f"{name} weighs strategy.static.{opt}[{j}], but {opt} has {len(static[opt])} "
                             f"entr{'y' if len(static[opt]) == 1 else 'ies'}; add the feature there")
    also = f" (and the keys {', '.join(extra)})" if extra else ""
    hint = _hint(str(name), list(active) + list(extra))
    return ctx.fail(key, f"policy '{policy_name}' has no parameter '{name}'{hint}; its parameters: "
                         f"{', '.join(active)}{also}")


def _parse_params(ctx: _Ctx, raw: Any, policy_name: str, policy: Policy, active: Sequence[str],
                  static: dict[str, Any]) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ctx.fail("strategy.params", f"expected a mapping of parameter -> value, got {_show(raw)}")
    out = {}
    for name, value in raw.items():
        key = _join("strategy.params", str(name))
        if value is None:  # null: the default
            continue
        if name not in active:
            spec = policy.params.get(name) if isinstance(name, str) else None
            if spec is not None and spec.slot is not None and value == spec.default:
                continue  # an unused weight written as its neutral default is harmless
            raise _unknown_param(ctx, key, name, policy_name, policy, active, static)
        spec = policy.params[name]
        value = _number(ctx, key, value, what=spec.unit, allow_inf=spec.allow_inf)
        _check_param(ctx, key, name, spec, [value])
        out[name] = value
    return out


def _check_param(ctx: _Ctx, key: str, name: str, spec: Param, values: Iterable[float], how: str = "") -> None:
    bad = spec.first_bad(np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64))
    if bad:
        value, problem = bad
        raise ctx.fail(key, f"{name} {how}value {value:g} is not allowed ({problem}): {name} takes "
                            f"{spec.allowed()} ({spec.unit})")


def _feature_ref(ctx: _Ctx, key: str, value: Any, names: Sequence[str], quoted: str, given: bool,
                 where: str) -> str:
    """A feature name in a static option: must be one of the experiment's features."""
    if not isinstance(value, str) or not value:
        raise ctx.fail(key, f"expected a feature name like realized_vol_60s or spot.rolling_return_300s, "
                            f"got {_show(value)}")
    if value.startswith(quoted + "."):  # the quoted instrument's features carry no prefix
        value = value[len(quoted) + 1:]
    if value not in names:
        raise ctx.fail(key if given else "features",
                       f"the policy reads feature '{value}' ({where}{'' if given else ', the default'}), which "
                       f"the features do not give{_hint(value, names)}; features: {', '.join(names) or 'none'}")
    return value


def _parse_static(ctx: _Ctx, raw: Any, policy_name: str, policy: Policy, data: DataConfig,
                  features: Sequence[FeatureSpec]) -> dict[str, Any]:
    """Static options with defaults filled; every feature they name must be in ``features``."""
    if not policy.static and isinstance(raw, dict) and raw:
        raise ctx.fail(_join("strategy.static", str(next(iter(raw)))), f"policy '{policy_name}' has no static options")
    sec = _Section(ctx, raw, "strategy.static", list(policy.static), f"static options of policy '{policy_name}'")
    names = [f.name for f in features]
    out: dict[str, Any] = {}
    for opt_name, opt in policy.static.items():
        key, given = sec.k(opt_name), opt_name in sec.value
        value = sec.value.get(opt_name) if given else opt.default
        where = f"strategy.static.{opt_name}"
        if opt.kind == "features":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise ctx.fail(key, f"expected a list of feature names, got {_show(value)}")
            if len(items) > opt.max_len:
                raise ctx.fail(key, f"at most {opt.max_len} features, got {len(items)}")
            value = tuple(_feature_ref(ctx, _join(key, i), v, names, data.quoted, given, where)
                          for i, v in enumerate(items))
        elif opt.kind == "feature":
            if value is not None or not opt.nullable:
                value = _feature_ref(ctx, key, value, names, data.quoted, given, where)
        elif opt.kind == "instrument":
            if value == data.quoted:
                value = ""
            if not isinstance(value, str) or (value and value not in data.signals):
                raise ctx.fail(key, f"expected '' (the quoted instrument) or one of {', '.join(data.signals)}, "
                                    f"got {_show(value)}")
        else:  # count
            value = _integer(ctx, key, value, what=opt.doc, low=1)
        out[opt_name] = value
    # The names the kernel will look up, by its own naming rules (e.g. <venue>.vamp_bps_<levels>).
    from ..kernels.policies import required_features

    try:
        needed = required_features(policy_name, out)
    except (KeyError, ValueError) as exc:
        raise ctx.fail("strategy.static", str(exc).strip("'\"")) from None
    missing = [n for n in needed if n not in names]
    if missing:
        raise ctx.fail("strategy.static" if sec.value else "features",
                       f"policy '{policy_name}' reads feature(s) {', '.join(missing)} under its static options "
                       f"{out}, which the features do not give; features: {', '.join(names) or 'none'}")
    return out


def _parse_strategy(ctx: _Ctx, raw: Any, data: DataConfig, features: Sequence[FeatureSpec]
                    ) -> tuple[str, Policy, dict[str, Any], list[str], dict[str, float]]:
    """``(policy name, policy, static options, settable parameter names, fixed parameters)``."""
    sec = _Section(ctx, raw, "strategy", ("policy", "params", "static"), "the quoting policy")
    if sec.value == {}:
        raise ctx.fail("strategy", f"required: {{policy: <one of {', '.join(POLICIES)}>, params: {{...}}}}")
    name = sec.text("policy", what="the quoting policy", choices=tuple(POLICIES))
    policy = POLICIES[name]
    static = _parse_static(ctx, sec.value.get("static"), name, policy, data, features)
    active = policy.active(static)
    return name, policy, static, active, _parse_params(ctx, sec.raw("params"), name, policy, active, static)


# --- sweep ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Scope:
    """What the sweep may name: the policy, its settable parameters, static options, fixed values."""

    name: str
    policy: Policy
    active: tuple[str, ...]
    static: dict[str, Any]
    fixed: dict[str, float]

    def unknown(self, ctx: _Ctx, key: str, name: Any, extra: Sequence[str] = ()) -> InputError:
        return _unknown_param(ctx, key, name, self.name, self.policy, self.active, self.static, extra)


def _swept_name(ctx: _Ctx, key: str, name: Any, scope: _Scope, taken: dict[str, str]) -> None:
    """A swept name must be a settable parameter of the policy, not fixed, not already swept."""
    if name not in scope.active:
        raise scope.unknown(ctx, key, name, ("joint", "derived") if key.count(".") == 1 else ())
    if name in scope.fixed:
        raise ctx.fail(key, f"'{name}' is both fixed (strategy.params.{name}) and swept; keep one")
    if name in taken:
        raise ctx.fail(key, f"'{name}' is already swept at {taken[name]}")


def _triple(ctx: _Ctx, key: str, raw: Any, kind: str) -> tuple[float, float, int]:
    """``[start, stop, num]`` or ``{start:, stop:, num:}`` of a linspace/logspace axis."""
    names = ("start", "stop", "num")
    unit = "base-10 exponent" if kind == "logspace" else "parameter units"
    if isinstance(raw, list):
        if len(raw) != 3:
            raise ctx.fail(key, f"expected [start, stop, num], got a list of {len(raw)}")
        raw = dict(zip(names, raw))
    sec = _Section(ctx, raw, key, names, f"{kind} start, stop, num")
    start = sec.number("start", what=unit)
    stop = sec.number("stop", what=unit)
    num = sec.integer("num", what="number of values", low=1)
    if num > MAX_AXIS_VALUES:
        raise ctx.fail(sec.k("num"), f"{num:,} values on one axis; at most {MAX_AXIS_VALUES:,} (for finer "
                                     f"coverage sample the axis with random or sobol)")
    if num == 1 and stop != start:
        raise ctx.fail(sec.k("stop"), f"num 1 gives only start ({start:g}); make stop equal to start, or use "
                                      f"{{list: [{start:g}]}}")
    if num > 1 and not stop > start:
        raise ctx.fail(sec.k("stop"), f"stop ({stop:g}) must be greater than start ({start:g}) when num > 1; "
                                      f"use list for other orders")
    return start, stop, num


def _parse_axis(ctx: _Ctx, key: str, name: str, raw: Any) -> Axis | Sample:
    if isinstance(raw, list):  # the bare list: shorthand for {list: [...]}
        raw = {"list": raw}
    if not isinstance(raw, dict) or len(raw) != 1:
        hint = "; put a fixed value in strategy.params" if not isinstance(raw, (dict, list)) else ""
        raise ctx.fail(key, f"a swept parameter needs exactly one of {', '.join(AXIS_KINDS)} "
                            f"(e.g. {{linspace: [1, 20, 16]}}), got {_show(raw)}{hint}")
    kind, args = next(iter(raw.items()))
    if kind not in AXIS_KINDS:
        raise ctx.fail(_join(key, str(kind)), f"unknown axis kind{_hint(str(kind), AXIS_KINDS)}; "
                                              f"allowed: {', '.join(AXIS_KINDS)}")
    k = _join(key, kind)
    if kind == "list":
        if not isinstance(args, list) or not args:
            raise ctx.fail(k, f"expected a non-empty list of numbers, got {_show(args)}")
        # infinities pass here; the parameter's own check decides (e.g. max_position: .inf)
        values = [_number(ctx, _join(k, i), v, what="parameter units", allow_inf=True) for i, v in enumerate(args)]
        if len(set(values)) != len(values):
            raise ctx.fail(k, "the list repeats a value (each lane would run twice)")
        return Axis(name, "list", tuple(values), tuple(values))
    if kind in ("linspace", "logspace"):
        start, stop, num = _triple(ctx, k, args, kind)
        values = (grids.linspace if kind == "linspace" else grids.logspace)(start, stop, num)
        return Axis(name, kind, tuple(float(v) for v in values), (start, stop, float(num)))
    sec = _Section(ctx, args, k, ("low", "high", "n", "seed", "log"), f"{kind} sample of one axis")
    rng = _parse_range(ctx, sec, name)
    n = sec.integer("n", what="number of samples", low=1)
    seed = sec.integer("seed", 0, what="random seed", low=0)
    return Sample(kind, n, seed, (rng,), inline=True)


def _parse_range(ctx: _Ctx, sec: _Section, name: str) -> Range:
    low = sec.number("low", what="lowest value, parameter units")
    high = sec.number("high", what="highest value (excluded), parameter units")
    log = sec.boolean("log", False, what="sample log-uniformly")
    if not high > low:
        raise ctx.fail(sec.k("high"), f"high ({high:g}) must be greater than low ({low:g})")
    if log and not low > 0:
        raise ctx.fail(sec.k("low"), f"log sampling needs low > 0, got {low:g}")
    return Range(name, low, high, log)


def _parse_joint(ctx: _Ctx, raw: Any, check_name) -> list[Sample]:
    groups = raw if isinstance(raw, list) else [raw]
    out = []
    for g, group in enumerate(groups):
        key = f"sweep.joint[{g}]" if isinstance(raw, list) else "sweep.joint"
        sec = _Section(ctx, group, key, ("random", "sobol", "axes"), "a joint sample: random or sobol, and axes")
        methods = [m for m in SAMPLERS if m in sec.value]
        if len(methods) != 1:
            raise ctx.fail(key, "give exactly one of random: {n:, seed:} or sobol: {n:, seed:}")
        method = methods[0]
        msec = _Section(ctx, sec.value[method], sec.k(method), ("n", "seed"), f"{method} sample size and seed")
        n = msec.integer("n", what="number of samples", low=1)
        seed = msec.integer("seed", 0, what="random seed", low=0)
        axes = sec.raw("axes")
        if not isinstance(axes, dict) or not axes:
            raise ctx.fail(sec.k("axes"), "required: a mapping of parameter -> {low:, high:, log:}")
        ranges = []
        for name, spec in axes.items():
            akey = _join(sec.k("axes"), str(name))
            check_name(akey, name)
            if isinstance(spec, list) and len(spec) == 2:
                spec = {"low": spec[0], "high": spec[1]}
            ranges.append(_parse_range(ctx, _Section(ctx, spec, akey, ("low", "high", "log"), "a sampled range"),
                                       name))
        out.append(Sample(method, n, seed, tuple(ranges)))
    return out


def _parse_tie(ctx: _Ctx, key: str, target: str, text: Any) -> Tie:
    if not isinstance(text, str):
        hint = " (a constant belongs in strategy.params)" if isinstance(text, (int, float)) else ""
        raise ctx.fail(key, f"expected NAME, NUM*NAME, NAME*NUM or NAME/NUM, got {_show(text)}{hint}")
    m = _TIE_RE.match(text)
    if not m:
        raise ctx.fail(key, f"cannot read '{text}': write NAME, NUM*NAME, NAME*NUM or NAME/NUM (e.g. 2*half_spread)")
    factor = float(m.group("pre")) if m.group("pre") else 1.0
    if m.group("op") == "*":
        factor *= float(m.group("post"))
    elif m.group("op") == "/":
        if float(m.group("post")) == 0:
            raise ctx.fail(key, f"'{text}' divides by zero")
        factor /= float(m.group("post"))
    return Tie(target, m.group("name"), factor, text.strip())


def _order_ties(ctx: _Ctx, ties: dict[str, Tie]) -> tuple[Tie, ...]:
    """Ties in dependency order (sources first); a cycle is an error naming it."""
    done: list[Tie] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2 or name not in ties:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ctx.fail(f"sweep.derived.{cycle[0]}", f"derived ties form a cycle: {' -> '.join(cycle)}")
        state[name] = 1
        visit(ties[name].source, path + [name])
        state[name] = 2
        done.append(ties[name])

    for name in ties:
        visit(name, [])
    return tuple(done)


def _check_lane_count(ctx: _Ctx, blocks: Sequence[Axis | Sample]) -> None:
    try:
        grids.check_count([b.size for b in blocks])
    except InputError as exc:
        raise ctx.fail("sweep", exc.message) from None


def _parse_sweep(ctx: _Ctx, raw: Any, scope: _Scope) -> Sweep:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ctx.fail("sweep", f"expected a mapping of parameter -> axis, got {_show(raw)}")
    taken: dict[str, str] = {}  # swept name -> where

    def check_name(key: str, name: Any) -> None:
        _swept_name(ctx, key, name, scope, taken)
        taken[name] = key

    blocks: list[Axis | Sample] = []
    for name, spec in raw.items():
        key = _join("sweep", str(name))
        if name == "derived":
            continue
        if name == "joint":
            blocks += _parse_joint(ctx, spec, check_name)
        else:
            check_name(key, name)
            blocks.append(_parse_axis(ctx, key, name, spec))
        _check_lane_count(ctx, blocks)  # before generating the next block

    # Every swept value must be allowed (samples: both ends of the range) -- errors now, not mid-run.
    swept_values: dict[str, list[float]] = {}
    for block in blocks:
        if isinstance(block, Axis):
            swept_values[block.name] = list(block.values)
            _check_param(ctx, _join(taken[block.name], block.kind), block.name, scope.policy.params[block.name],
                         block.values, f"{block.kind} ")
            continue
        for r in block.ranges:
            spec = scope.policy.params[r.name]
            if spec.integer:
                raise ctx.fail(taken[r.name], f"{r.name} takes whole numbers; {block.method} samples are "
                                              f"fractional -- use list or linspace")
            swept_values[r.name] = [r.low, r.high]
            _check_param(ctx, taken[r.name], r.name, spec, swept_values[r.name], "sampled ")

    return Sweep(tuple(blocks), _parse_derived(ctx, raw.get("derived"), scope, swept_values))


def _parse_derived(ctx: _Ctx, raw: Any, scope: _Scope, swept: dict[str, list[float]]) -> tuple[Tie, ...]:
    """Ties ``target: expression``; each target's possible values are range-checked now."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ctx.fail("sweep.derived", f"expected a mapping target -> expression (e.g. grid_interval: "
                                        f"half_spread), got {_show(raw)}")
    ties: dict[str, Tie] = {}
    for target, text in raw.items():
        key = f"sweep.derived.{target}"
        if target not in scope.active:
            raise scope.unknown(ctx, key, target)
        if target in scope.fixed:
            raise ctx.fail(key, f"'{target}' is both fixed (strategy.params.{target}) and derived; keep one")
        if target in swept:
            raise ctx.fail(key, f"'{target}' is both swept (sweep.{target}) and derived; keep one")
        tie = _parse_tie(ctx, key, target, text)
        if tie.source not in scope.policy.params:
            raise ctx.fail(key, f"'{tie.source}' is not a parameter of policy '{scope.name}'"
                                f"{_hint(tie.source, scope.active)}; its parameters: {', '.join(scope.active)}")
        ties[target] = tie
    ordered = _order_ties(ctx, ties)

    # The values a tie can produce: factor times every value its source can take (a linear map,
    # so a sampled range's two ends bound it).
    values: dict[str, list[float]] = {**swept, **{k: [v] for k, v in scope.fixed.items()}}
    for tie in ordered:
        key = f"sweep.derived.{tie.target}"
        base = values.get(tie.source)
        if base is None:
            default = scope.policy.params[tie.source].default
            if default is None:
                raise ctx.fail(key, f"'{tie.source}' has no value: fix it in strategy.params or sweep it")
            base = [float(default)]
        values[tie.target] = [tie.factor * v for v in base]
        _check_param(ctx, key, tie.target, scope.policy.params[tie.target], values[tie.target], "derived ")
    return ordered


# --- the small sections -------------------------------------------------------------------------


def _parse_objective(ctx: _Ctx, raw: Any) -> Objective:
    from .selection import RANK_ON

    sec = _Section(ctx, raw, "objective", ("metric", "maximize", "rank_on", "quantile", "neighbourhood"),
                   "what ranks the lanes")
    metric = sec.text("metric", "SR", what="the ranking metric", choices=tuple(METRICS))
    return Objective(metric, sec.boolean("maximize", METRICS[metric], what="true: larger is better"),
                     rank_on=sec.text("rank_on", "train", what="what the lanes are ranked on", choices=RANK_ON),
                     quantile=sec.number("quantile", 0.25, what="quantile of the fold test objectives", low=0,
                                         high=1),
                     neighbourhood=sec.integer("neighbourhood", 0, what="grid steps of the smoothed objective",
                                               low=0))


def _parse_constraints(ctx: _Ctx, raw: Any) -> Constraints:
    sec = _Section(ctx, raw, "constraints", ("min_trades", "max_drawdown"), "lanes that may rank")
    return Constraints(
        min_trades=sec.integer("min_trades", None, what="fewest fills on the train part", low=0),
        max_drawdown=sec.number("max_drawdown", None, what="largest MaxDrawdown, fraction of book_size",
                                low=0, open_low=True),
    )


def _parse_split(ctx: _Ctx, raw: Any) -> Split:
    from .selection import parse_folds

    sec = _Section(ctx, raw, "split", ("train_fraction", "train_end_ms", "walk_forward", "k_fold"), "train/test split")
    folds = parse_folds(sec)
    return dataclasses.replace(_parse_train_test(ctx, sec), folds=folds)


def _parse_train_test(ctx: _Ctx, sec: "_Section") -> Split:
    if sec.has("train_fraction") and sec.has("train_end_ms"):
        raise ctx.fail(sec.k("train_end_ms"), "give either train_fraction or train_end_ms, not both")
    if sec.has("train_end_ms"):
        end = sec.integer("train_end_ms", what="end of the train part, ms since the Unix epoch (local clock)", low=0)
        if end > MAX_EPOCH_MS:
            raise ctx.fail(sec.k("train_end_ms"), f"{end} ms is after the year 2100: not ms since the Unix epoch")
        return Split(None, end)
    return Split(sec.number("train_fraction", 1.0, what="share of frame rows in the train part; 1 = no test",
                            low=0, high=1, open_low=True))


def _parse_verify(ctx: _Ctx, raw: Any) -> Verify:
    from ..replay.queue import QUEUE_MODELS

    sec = _Section(ctx, raw, "verify", ("top_k", "sample", "seed", "queue", "queue_n", "partial_fills", "response_ms",
                                        "cross_per_message", "lockstep", "processes", "frontier"),
                   "exact-engine verification")
    response = sec.raw("response_ms")
    return Verify(
        top_k=sec.integer("top_k", 20, what="best lanes replayed on the exact engine", low=0),
        sample=sec.integer("sample", 50, what="random lanes replayed for calibration", low=0),
        seed=sec.integer("seed", 0, what="seed of the random sample", low=0),
        queue=sec.text("queue", "power", what="queue-position model of the exact engine", choices=tuple(QUEUE_MODELS)),
        queue_n=sec.number("queue_n", 2.0, what="exponent of the power queue models", low=0, open_low=True,
                           high=MAX_QUEUE_N),
        partial_fills=sec.boolean("partial_fills", False, what="partial-fill exchange"),
        response_ms=None if response is None else sec.number("response_ms", what="constant response latency, ms",
                                                             low=0, high=MAX_LATENCY_MS),
        cross_per_message=sec.boolean("cross_per_message", True, what="judge best-price crosses per message"),
        lockstep=sec.integer("lockstep", 8, what="candidates replayed together in one pass", low=1),
        processes=sec.integer("processes", 0, what="worker processes (0 = one per CPU)", low=0),
        frontier=sec.integer("frontier", 4, what="multiple m of top_k: the fast top K x m lanes are replayed", low=1),
    )


def _parse_metrics(ctx: _Ctx, raw: Any, interval_ns: int) -> Metrics:
    sec = _Section(ctx, raw, "metrics", ("resample_s", "book_size", "trading_days_per_year"), "metric settings")
    resample_s = sec.number("resample_s", 1.0, what="equity resample period, s", low=0, open_low=True,
                            high=MAX_SPAN_S)
    rows = resample_s * 1e9 / interval_ns
    if abs(rows - round(rows)) > 1e-9 * max(1.0, rows) or round(rows) < 1:
        raise ctx.fail(sec.k("resample_s"), f"{resample_s:g} s is not a whole number of decision intervals "
                                            f"({interval_ns / 1e6:g} ms)")
    book = sec.number("book_size", 100_000.0,
                      what="capital for Return and MaxDrawdown, in the PnL currency (the coin for inverse contracts)",
                      low=0, open_low=True)
    days = sec.number("trading_days_per_year", 252.0, what="annualisation of SR and Sortino", low=0,
                      open_low=True, high=366)
    return Metrics(resample_s, book, days)


def _parse_run(ctx: _Ctx, raw: Any) -> Run:
    sec = _Section(ctx, raw, "run", ("chunk_lanes", "dtype", "out", "max_levels", "backend", "time_chunk_rows"),
                   "how the sweep runs")
    return Run(
        time_chunk_rows=sec.integer("time_chunk_rows", None, what="frame rows per kernel call, the lane state "
                                    "carried from one to the next (streamed sources: a store chunk)", low=1),
        chunk_lanes=sec.integer("chunk_lanes", 8192, what="lanes per device call", low=1),
        dtype=sec.text("dtype", "float32", what="kernel float type", choices=DTYPES),
        out=sec.text("out", "runs", what="folder of run folders, relative to the working directory"),
        max_levels=sec.integer("max_levels", None, what="order slots per side in the kernel's arrays", low=1),
        backend=sec.text("backend", "auto", what="kernel backend", choices=BACKENDS),
    )


def _parse_provenance(ctx: _Ctx, raw: Any) -> dict | None:
    """The informational ``provenance`` section (checked by :func:`mmsweep.sweep.export.check_provenance`)."""
    from .export import check_provenance

    return None if raw is None else check_provenance(raw, ctx.fail)


def parse_experiment(mapping: dict, source: str = "", *, base_dir: str | os.PathLike | None = None) -> Experiment:
    """Validate an experiment given as a mapping (parsed YAML or :meth:`Experiment.to_dict`).

    Args:
        mapping: the experiment (see the module docstring for the schema).
        source: where it came from, named in errors.
        base_dir: folder relative input paths are resolved against (default: the working directory).
    """
    ctx = _Ctx(source, Path(base_dir) if base_dir is not None else Path.cwd())
    if mapping is None:
        raise ctx.fail("", "the experiment is empty")
    top = _Section(ctx, mapping, "", TOP_KEYS, "an experiment")
    name = top.text("name", what="experiment name")
    if not _NAME_RE.match(name):
        raise ctx.fail("name", f"'{name}' must be letters, digits, _ . - (it names the run folder)")
    data = _parse_data(ctx, top.raw("data"))
    interval_ms = top.number("interval_ms", 100.0, what="decision interval, ms", low=0, open_low=True,
                             high=MAX_SPAN_S * 1e3)
    interval_ns = _ms_to_ns(ctx, "interval_ms", interval_ms)
    features = _parse_features(ctx, top.raw("features"), data)
    policy_name, policy, static, active, fixed = _parse_strategy(ctx, top.raw("strategy"), data, features)
    sweep = _parse_sweep(ctx, top.raw("sweep"), _Scope(policy_name, policy, tuple(active), static, fixed))
    # Fill the defaults of parameters neither fixed, swept nor derived; a required one is an error.
    varied = set(sweep.names) | {t.target for t in sweep.derived}
    from .fit import parse_fit

    fit = parse_fit(ctx, top.raw("fit"), policy_name, static, varied)
    params: dict[str, float] = {}
    for pname, spec in policy.params.items():
        if pname in fixed:
            params[pname] = fixed[pname]
        elif pname not in varied:
            if spec.default is None:
                raise ctx.fail(f"strategy.params.{pname}", f"policy '{policy_name}' needs {pname} ({spec.unit}): "
                                                           f"fix it here, sweep it or derive it")
            params[pname] = float(spec.default)
    if "fees" not in mapping:
        raise ctx.fail("fees", "required: {maker_bps: ..., taker_bps: ...} in bps of traded value, positive = "
                               "cost, negative = rebate")
    fees_sec = _Section(ctx, top.raw("fees"), "fees", ("maker_bps", "taker_bps"), "fees")
    fees = Fees(fees_sec.number("maker_bps", what="maker fee, bps of traded value, negative = rebate",
                                low=-MAX_FEE_BPS, high=MAX_FEE_BPS),
                fees_sec.number("taker_bps", what="taker fee, bps of traded value, negative = rebate",
                                low=-MAX_FEE_BPS, high=MAX_FEE_BPS))
    exp = Experiment(
        name=name,
        description=top.text("description", "", what="free text"),
        data=data,
        interval_ns=interval_ns,
        latency=_parse_latency(ctx, top.raw("latency")),
        fees=fees,
        fill_model=top.text("fill_model", "cross", what="how resting orders fill", choices=FILL_MODELS),
        features=features,
        strategy=Strategy(policy_name, params, static),
        sweep=sweep,
        objective=_parse_objective(ctx, top.raw("objective")),
        constraints=_parse_constraints(ctx, top.raw("constraints")),
        split=_parse_split(ctx, top.raw("split")),
        verify=_parse_verify(ctx, top.raw("verify")),
        metrics=_parse_metrics(ctx, top.raw("metrics"), interval_ns),
        run=_parse_run(ctx, top.raw("run")),
        source=source,
        provenance=_parse_provenance(ctx, top.raw("provenance")),
        fit=fit,
        queue_levels=top.integer("queue_levels", 4, what="ticks from the touch the queue fill model sees", low=1),
    )
    if exp.queue_levels > 64:
        raise ctx.fail("queue_levels", f"at most 64 ticks per side, got {exp.queue_levels}")
    if exp.fill_model == "queue" and exp.verify.queue == "none":
        raise ctx.fail("fill_model", "fill_model: queue follows verify.queue's queue model, which is 'none'; set "
                       "verify.queue to risk_averse, power, power2, power3, log or log2")
    if top.raw("tune") is not None:  # mmsweep tune's section (tune_config.py)
        from .tune_config import parse_tune

        exp = dataclasses.replace(exp, tune=parse_tune(ctx, top.raw("tune"), policy_name, policy, active, sweep,
                                                       exp.objective.metric))
    if exp.objective.rank_on != "train" and exp.split.folds is None:
        raise ctx.fail("objective.rank_on", f"rank_on: {exp.objective.rank_on} ranks across folds; add "
                       "split.walk_forward or split.k_fold")
    if exp.split.folds is not None:  # blocks are whole resample windows (one compiled kernel for all)
        every = max(1, int(round(exp.metrics.resample_s * 1e9 / interval_ns)))
        exp = dataclasses.replace(exp, split=dataclasses.replace(
            exp.split, folds=dataclasses.replace(exp.split.folds, align_rows=every)))
    return exp


# --------------------------------------------------------------------------------------------
# Back to a plain mapping
# --------------------------------------------------------------------------------------------


def _num(value: float) -> int | float:
    """Whole floats as int (cleaner YAML), others (and inf) as float."""
    return int(value) if math.isfinite(value) and float(value).is_integer() and abs(value) < 2**53 else float(value)


def _feature_dict(spec: FeatureSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": spec.kind}
    if spec.instrument:
        out["instrument"] = spec.instrument
    for name in sorted(_FEATURE_PARAMS[spec.kind]):
        out[name] = getattr(spec, name)
    return out


def _sweep_dict(sweep: Sweep) -> dict[str, Any]:
    out: dict[str, Any] = {}
    joint: list[dict] = []
    for b in sweep.blocks:
        if isinstance(b, Axis):
            out[b.name] = {b.kind: [_num(v) for v in b.args]}
        elif b.inline:
            r = b.ranges[0]
            out[r.name] = {b.method: {"low": _num(r.low), "high": _num(r.high), "n": b.n, "seed": b.seed,
                                      "log": r.log}}
        else:
            if "joint" not in out:
                out["joint"] = joint  # keeps the joint groups' place in the block order
            joint.append({b.method: {"n": b.n, "seed": b.seed},
                          "axes": {r.name: {"low": _num(r.low), "high": _num(r.high), "log": r.log}
                                   for r in b.ranges}})
    if sweep.derived:
        out["derived"] = {t.target: t.text for t in sweep.derived}
    return out


def _to_dict(exp: Experiment) -> dict[str, Any]:
    d = exp.data
    data: dict[str, Any] = {"source": d.source, "quoted": d.quoted}
    # written only when set, so that experiments from before these keys keep their hash
    if d.stale_after_s != 60.0:
        data["stale_after_s"] = _num(d.stale_after_s)
    if d.on_stale != "warn":
        data["on_stale"] = d.on_stale
    if d.synthetic is not None:
        data["synthetic"] = dict(d.synthetic)
    if d.files is not None:
        data["files"] = {
            name: {"path": list(f.paths) if len(f.paths) > 1 else f.paths[0],
                   **{k: v for k, v in (("format", f.format), ("tick_size", f.tick_size), ("lot_size", f.lot_size),
                                        ("symbol", f.symbol), ("instrument", f.instrument),
                                        ("base_latency_ms", None if f.base_latency_ns is None
                                         else _num(f.base_latency_ns / 1e6)),
                                        ("feed_latency_ms", None if f.feed_latency_ns is None
                                         else _num(f.feed_latency_ns / 1e6)),
                                        ("snapshot", f.snapshot)) if v is not None}}
            for name, f in d.files.items()}
    if d.instrument:  # written only when set (older experiments keep their hash)
        data["instrument"] = dict(d.instrument)
    latency = {"file": exp.latency.file} if exp.latency.file else {"entry_ms": _num(exp.latency.entry_ns / 1e6)}
    split = ({"train_end_ms": exp.split.train_end_ms} if exp.split.train_end_ms is not None
             else {"train_fraction": exp.split.train_fraction})
    if exp.split.folds is not None:  # written only when set (older experiments keep their hash)
        split.update(exp.split.folds.to_dict())
    objective = {k: v for k, v in dataclasses.asdict(exp.objective).items()
                 if k in ("metric", "maximize") or v != getattr(Objective, k)}
    return {
        "name": exp.name,
        "description": exp.description,
        "data": data,
        "interval_ms": _num(exp.interval_ns / 1e6),
        "latency": latency,
        "fees": dataclasses.asdict(exp.fees),
        "fill_model": exp.fill_model,
        **({"queue_levels": exp.queue_levels} if exp.fill_model == "queue" else {}),
        "features": [_feature_dict(f) for f in exp.features],
        "strategy": {"policy": exp.strategy.policy,
                     "params": {k: _num(v) for k, v in exp.strategy.params.items()
                                if k in exp.policy.active(exp.strategy.static)},
                     "static": {k: list(v) if isinstance(v, tuple) else v for k, v in exp.strategy.static.items()}},
        "sweep": _sweep_dict(exp.sweep),
        "objective": objective,
        "constraints": dataclasses.asdict(exp.constraints),
        "split": split,
        # frontier only when not the default (older experiments keep their hash)
        "verify": {k: v for k, v in dataclasses.asdict(exp.verify).items() if not (k == "frontier" and v == 4)},
        "metrics": dataclasses.asdict(exp.metrics),
        # max_levels and provenance written only when set (older experiments keep their hash)
        # max_levels and backend only when set (older experiments keep their hash)
        "run": {k: v for k, v in dataclasses.asdict(exp.run).items()
                if not (k == "max_levels" and v is None) and not (k == "backend" and v == "auto")
                and not (k == "time_chunk_rows" and v is None)},
        **({"provenance": exp.provenance} if exp.provenance is not None else {}),
        **({"fit": exp.fit.to_dict()} if exp.fit is not None else {}),
        **({"tune": exp.tune.to_dict()} if exp.tune is not None else {}),
    }
