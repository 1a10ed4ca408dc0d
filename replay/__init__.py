"""The exact CPU event-replay engine (DESIGN §4): numba, event by event, several candidates in
lock-step over one pass of the events.  The reference the sweep kernel is judged against."""
from .engine import Backtest, ReplayConfig, ReplayResult, build_data, replay_metrics, replay_policy

__all__ = ["Backtest", "ReplayConfig", "ReplayResult", "build_data", "replay_metrics", "replay_policy"]
