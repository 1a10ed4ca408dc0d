"""``import mmsweep`` keys numba's on-disk cache on a digest of all the package's sources."""
from __future__ import annotations

import os
import subprocess
import sys
import time

PROBE = ("import os, sys; {pre}import mmsweep; "
         "print(os.environ['NUMBA_CACHE_DIR']); "
         "print(sys.modules['numba'].config.CACHE_DIR if 'numba' in sys.modules else '-')")


def _probe(tmp_path, pre="", **env):
    base = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(pre=pre)], capture_output=True, text=True,
                         env=dict(base, MMSWEEP_CACHE=str(tmp_path), **env), timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_cache_folder_is_named_by_the_sources_and_old_ones_are_pruned(tmp_path):
    stale, recent = tmp_path / "numba" / "stale", tmp_path / "numba" / "recent"
    for folder in (stale, recent):
        folder.mkdir(parents=True)
    month_ago = time.time() - 30 * 86400
    os.utime(stale, (month_ago, month_ago))
    folder, numba_dir = _probe(tmp_path)
    parent, name = os.path.split(folder)
    assert parent == str(tmp_path / "numba") and len(name) == 16 and int(name, 16) >= 0
    assert numba_dir == "-"  # numba not imported by `import mmsweep` itself
    assert not stale.exists() and recent.exists()  # unused for 30 days: removed; 0 days: kept
    assert _probe(tmp_path)[0] == folder  # the same sources, the same folder


def test_numba_imported_first_is_pointed_there_too(tmp_path):
    folder, numba_dir = _probe(tmp_path, pre="import numba; ")
    assert numba_dir == folder


def test_a_folder_the_user_set_is_kept(tmp_path):
    mine = str(tmp_path / "mine")
    assert _probe(tmp_path, NUMBA_CACHE_DIR=mine)[0] == mine


JAX_PROBE = ("import os, sys; {pre}import mmsweep; import jax, jax.numpy as jnp; "
             "print(jax.config.jax_compilation_cache_dir); "
             "jax.jit(lambda a: jnp.cumsum(a * 3.0) - 1)(jnp.arange(7.0)).block_until_ready()")


def _jax_probe(tmp_path, pre="", **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "MMSWEEP_JAX_CACHE"}
    out = subprocess.run([sys.executable, "-c", JAX_PROBE.format(pre=pre)], capture_output=True, text=True,
                         env=dict(base, MMSWEEP_CACHE=str(tmp_path), **env), timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def test_jax_compilation_cache_is_kept_per_cpu_and_reused(tmp_path):
    folder = _jax_probe(tmp_path)
    parent, name = os.path.split(folder)
    assert parent == str(tmp_path / "jax") and len(name) == 16 and int(name, 16) >= 0
    written = sorted(os.listdir(folder))
    assert any(f.startswith("jit__lambda") for f in written)  # even a program this small is cached
    assert _jax_probe(tmp_path) == folder and sorted(os.listdir(folder)) == written  # the second run reads
    assert _jax_probe(tmp_path, pre="import jax; ") == folder  # JAX imported first: configured too


def test_jax_cache_left_to_the_user(tmp_path):
    mine = str(tmp_path / "mine")
    assert _jax_probe(tmp_path, JAX_COMPILATION_CACHE_DIR=mine) == mine
    assert _jax_probe(tmp_path, MMSWEEP_JAX_CACHE="0") == "None"
    assert not (tmp_path / "jax").exists()
