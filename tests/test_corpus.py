"""The adversarial corpus (tests/corpus/make_corpus.py) through the command line: every damaged
input or misuse ends in one ``error:`` line naming the file and line/row/key (exit 2), or in
its documented repair with a ``warning:`` naming it (exit 0).  One test per class."""
from __future__ import annotations

import re
import sys
import traceback
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsweep.sweep.cli import main

sys.path.insert(0, str(Path(__file__).parent / "corpus"))
import make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data) -> list:
    return make_corpus.build(tmp_path_factory.mktemp("corpus"), shared_data)


def outcome_problem(case, result) -> str | None:
    """Why ``result`` is not the case's expected outcome, or None."""
    err = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(result.exception))
        return f"raised {type(result.exception).__name__} (a traceback, not a one-line error):\n{tb[-1500:]}"
    if "Traceback" in result.output:
        return "printed a traceback"
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    warnings_ = [line for line in err.splitlines() if line.startswith("warning: ")]
    if case.outcome == "error":
        if result.exit_code != 2 or len(errors) != 1:
            return f"exit {result.exit_code} with {len(errors)} error line(s), expected one and exit 2:\n{err[-800:]}"
        line = errors[0]
        if not re.search(case.where, line) or not re.search(case.says, line):
            return f"the error does not name {case.where!r} and say {case.says!r}:\n{line}"
        return None
    if result.exit_code != 0 or errors:
        return f"exit {result.exit_code}, expected a repair (exit 0):\n{err[-800:]}"
    if not any(re.search(case.where, w) and re.search(case.says, w) for w in warnings_):
        return f"no warning names {case.where!r} and says {case.says!r}; warnings:\n" + "\n".join(warnings_)
    return None


def run_class(corpus: list, klass: str, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))
    cases = [c for c in corpus if c.klass == klass]
    assert len(cases) >= 5, f"class {klass} has only {len(cases)} case(s)"
    runner = CliRunner()
    problems = {}
    for case in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # as in a fresh process: an identical warning shows again
            problem = outcome_problem(case, runner.invoke(main, list(case.argv)))
        if problem:
            problems[case.name] = problem
    assert not problems, "\n\n".join(f"{name}: {p}" for name, p in problems.items())


def test_bad_timestamps(corpus, monkeypatch, tmp_path) -> None:
    """One implausible timestamp (exchange years ahead, 0, a local spike or dip, the last line
    years ahead) is dropped with a warning naming its line; many, or an unparseable one, stop;
    a grid that would not fit memory is refused with its size."""
    run_class(corpus, "timestamps", monkeypatch, tmp_path)


def test_stale_inputs(corpus, monkeypatch, tmp_path) -> None:
    """Sources that stop early are reported (and flagged per row, or stop with on_stale: error);
    a latency file of another day and exch_ts 0 everywhere stop; a stray price and a duplicated
    trade line are dropped with a warning."""
    run_class(corpus, "stale", monkeypatch, tmp_path)


def test_adversarial_yaml(corpus, monkeypatch, tmp_path) -> None:
    """Alias bombs, deep nesting, NaN/inf/huge values, a too-large or non-UTF-8 file: one error
    line in bounded time and memory."""
    run_class(corpus, "yaml", monkeypatch, tmp_path)


def test_adversarial_cli_values(corpus, monkeypatch, tmp_path) -> None:
    """nan, inf and out-of-range numbers on the command line: one error line naming the option."""
    run_class(corpus, "cli", monkeypatch, tmp_path)


def test_inspect_reports_repairs_and_coverage(corpus, shared_data) -> None:
    """`data inspect` lists what the reader dropped and, for merged files, each file's span."""
    runner = CliRunner()
    by_name = {c.name: c for c in corpus}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dup = runner.invoke(main, list(by_name["bn_duplicated_trade_line"].argv))
        merged = runner.invoke(main, list(by_name["td_quotes_stop_early"].argv[:1]) + ["inspect", "--merge"]
                               + list(by_name["td_quotes_stop_early"].argv[2:]))
    assert dup.exit_code == 0 and "dropped        1 duplicated trades" in dup.stdout
    assert merged.exit_code == 0, merged.output
    coverage = [line for line in merged.stdout.splitlines() if line.startswith("  coverage")]
    assert len(coverage) == 2 and "02:05:47" in coverage[0] and "00:03:47" in coverage[1]
