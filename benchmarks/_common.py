"""Shared helpers for the geopath benchmarks: timing, machine info, tables, synthetic activations.

Timing protocol (used by every script):

* ``first`` -- wall time of the first call. For jitted JAX code this includes tracing + XLA compilation;
  for NumPy/PyTorch it includes one-off warm-up (thread-pool start, lazy library loading).
* ``steady`` -- median wall time of the following calls (``repeats`` of them, fewer when a time budget
  runs out). JAX results are forced with ``block_until_ready`` before the clock stops.
* ``compile`` -- ``first - steady`` (clipped at 0): the one-off cost of the first call.

All timings are wall-clock (``time.perf_counter``) on a machine whose 2 cores are shared with other
workers; every script is meant to be run under ``flock /tmp/geopath-cpu.lock`` so that the benchmark runs
do not overlap each other, and ratios are always computed from runs made back-to-back in one process.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------------
# Machine information


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return ",".join(x for x in ("avx2", "fma", "avx512f", "avx512_bf16") if x in flags)
    except OSError:
        pass
    return ""


def _mem_total_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _version(mod: str) -> str:
    try:
        return importlib.import_module(mod).__version__
    except Exception:  # noqa: BLE001 - any import failure just means "absent"
        return "absent"


def geopath_source_digest() -> str:
    """Short SHA-256 of geopath's source files: identifies the exact library code a number was measured on."""
    import hashlib  # noqa: PLC0415

    h = hashlib.sha256()
    files = sorted((PROJECT_ROOT / "geopath").rglob("*.py"))
    for f in files:
        h.update(f.relative_to(PROJECT_ROOT).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12] if files else "absent"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, library versions, date and load -- printed at the top of every run."""
    affinity = usable_cores()
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "ram_gib": round(_mem_total_gib(), 1),
        "loadavg_1_5_15": tuple(round(x, 2) for x in load),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "torch": _version("torch"),
        "geopath": _version("geopath"),
        "geopath_src_sha256": geopath_source_digest(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "GEOPATH_RUNTIME_CHECKS": os.environ.get("GEOPATH_RUNTIME_CHECKS", "(unset: on)"),
    }
    try:
        import torch  # noqa: PLC0415

        info["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    return info


def print_machine_info(info: dict[str, Any] | None = None, file=None) -> dict[str, Any]:
    info = machine_info() if info is None else info
    file = sys.stdout if file is None else file
    print("## machine", file=file)
    for k, v in info.items():
        print(f"#   {k}: {v}", file=file)
    print(
        "#   caveat: 2 shared cores; other workers may run concurrently (runs serialised with "
        "flock /tmp/geopath-cpu.lock); ratios are measured back-to-back in one process.",
        file=file,
    )
    file.flush()
    return info


# ----------------------------------------------------------------------------------------------------
# CPU contention from other processes (the machine's 2 cores are shared)


def _cpu_jiffies() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [float(v) for v in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
    total = sum(parts[:8])
    return total - idle, total


def _own_jiffies() -> float:
    """utime + stime (+ children) of this process, in jiffies."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(float(v) for v in fields[11:15])


class CpuMonitor:
    """Fraction of the machine's CPU time used by *other* processes between ``start()`` and ``stop()``.

    ``others`` is ``(machine busy - this process) / (machine total)``: 0 on an otherwise idle machine, 0.5 when
    another process keeps one of the two cores busy. Timings taken with ``others`` above ~0.1 are contaminated
    (BLAS/XLA thread pools oversubscribe the cores, which can slow a run down by far more than the share).
    """

    def __init__(self):
        self.others = float("nan")
        self._t0 = None

    def start(self):
        try:
            self._t0 = (_cpu_jiffies(), _own_jiffies())
        except (OSError, ValueError, IndexError):
            self._t0 = None
        return self

    def stop(self) -> float:
        if self._t0 is None:
            return self.others
        try:
            (b0, t0), o0 = self._t0
            (b1, t1), o1 = _cpu_jiffies(), _own_jiffies()
        except (OSError, ValueError, IndexError):
            return self.others
        total = max(t1 - t0, 1e-9)
        self.others = min(max((b1 - b0 - (o1 - o0)) / total, 0.0), 1.0)
        return self.others


def wait_for_quiet_cpu(threshold: float = 0.1, max_wait_s: float = 180.0, probe_s: float = 1.0) -> float:
    """Waits (up to ``max_wait_s``) until other processes use less than ``threshold`` of the CPU.

    Returns the last measured share of the other processes. Used before each timed measurement, because
    workers outside the ``flock`` (test runs) can share the 2 cores.
    """
    t_end = time.monotonic() + max_wait_s
    while True:
        m = CpuMonitor().start()
        time.sleep(probe_s)
        share = m.stop()
        if not share > threshold or time.monotonic() > t_end:
            return share


# ----------------------------------------------------------------------------------------------------
# Timing


def block(x: Any) -> Any:
    """Waits for every JAX array in the pytree ``x`` (no-op for NumPy / PyTorch values)."""
    try:
        import jax  # noqa: PLC0415

        for leaf in jax.tree_util.tree_leaves(x):
            if hasattr(leaf, "block_until_ready"):
                leaf.block_until_ready()
    except ImportError:
        pass
    return x


@dataclass
class Timing:
    """Wall-clock timing of one function: first call and the median of the following calls."""

    first_s: float
    steady_s: float  # median of the steady calls (== first_s when none could be afforded)
    min_s: float
    repeats: int  # number of steady calls behind ``steady_s`` (0: only the first call was run)
    times_s: list[float] = field(default_factory=list)
    others_cpu: float = float("nan")  # share of the machine's CPU used by other processes meanwhile

    @property
    def compile_s(self) -> float:
        """One-off cost of the first call (tracing + compilation for JAX); 0 when not measurable."""
        return max(self.first_s - self.steady_s, 0.0) if self.repeats else float("nan")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compile_s"] = self.compile_s
        return d


def time_call(
    fn: Callable[[], Any], *, repeats: int = 5, budget_s: float = 30.0, min_repeats: int = 1
) -> tuple[Timing, Any]:
    """Times ``fn()``: one first call, then up to ``repeats`` steady calls within ``budget_s`` seconds.

    At least ``min_repeats`` steady calls are made unless the first call alone exceeded ``budget_s``
    (then ``repeats == 0`` and ``steady_s`` is the first call's time -- reported as such).

    Returns:
      ``(Timing, result_of_first_call)``.
    """
    mon = CpuMonitor().start()
    t0 = time.perf_counter()
    out = block(fn())
    first = time.perf_counter() - t0
    times: list[float] = []
    spent = first
    while len(times) < repeats:
        if first > budget_s:
            break
        if len(times) >= min_repeats and spent + (statistics.median(times) if times else first) > budget_s:
            break
        t0 = time.perf_counter()
        block(fn())
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    others = mon.stop()
    if times:
        return Timing(first, statistics.median(times), min(times), len(times), times, others), out
    return Timing(first, first, first, 0, [], others), out


# ----------------------------------------------------------------------------------------------------
# Memory


def reset_peak_rss() -> bool:
    """Resets this process's peak RSS (VmHWM) via /proc/self/clear_refs; False if not supported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(key: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """VmHWM (peak resident set since the last :func:`reset_peak_rss`); ru_maxrss if unavailable."""
    v = _status_kib("VmHWM")
    if math.isnan(v):
        v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return v / 1024


@contextlib.contextmanager
def peak_memory():
    """Measures the peak resident memory *above the resident memory at entry* (MiB) of the block.

    Yields a dict filled on exit with ``peak_mib`` (VmHWM after the block minus VmRSS at entry) and
    ``method``. It counts everything the process touches (NumPy, XLA and PyTorch buffers, temporaries);
    it includes transient buffers that were freed again, which is the number that decides whether a
    computation fits in RAM.
    """
    res: dict[str, Any] = {}
    ok = reset_peak_rss()
    base = rss_mib()
    try:
        yield res
    finally:
        res["peak_mib"] = max(peak_rss_mib() - base, 0.0)
        res["method"] = "VmHWM delta (clear_refs reset)" if ok else "ru_maxrss delta (lower bound)"


# ----------------------------------------------------------------------------------------------------
# Context helpers


@contextlib.contextmanager
def jax_precision(dtype: str):
    """Enables 64-bit JAX inside the block when ``dtype == 'float64'`` (restored on exit)."""
    import jax  # noqa: PLC0415

    if dtype == "float64":
        with jax.enable_x64(True):
            yield
    else:
        yield


def torch_available() -> bool:
    try:
        import torch  # noqa: F401, PLC0415

        return True
    except Exception:  # noqa: BLE001
        return False


@contextlib.contextmanager
def torch_threads(n: int | None = None):
    """Sets torch's intra-op thread count (default: all cores) inside the block; restores it after."""
    try:
        import torch  # noqa: PLC0415
    except Exception:  # noqa: BLE001
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n or os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def import_geopath():
    """Imports geopath. A broken geopath raises here: a benchmark must not report results without it."""
    import geopath  # noqa: PLC0415

    _ = geopath.pairwise_distances, geopath.AngularShape
    return geopath


# ----------------------------------------------------------------------------------------------------
# Argument parsing and output


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; used by the test-suite")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", type=int, default=5, help="steady-state calls per measurement (max)")
    p.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds per measurement; fewer repeats / sampled baseline pairs when exceeded",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    p.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="print only the tables")
    return p


def fmt_s(s: float) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def fmt_x(r: float) -> str:
    if r is None or (isinstance(r, float) and (math.isnan(r) or math.isinf(r))):
        return "-"
    return f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def fmt_e(e: float) -> str:
    if e is None or (isinstance(e, float) and math.isnan(e)):
        return "-"
    return f"{e:.1e}"


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]], file=None) -> str:
    """Prints (and returns) a Markdown table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = [
        f"\n### {title}\n",
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    text = "\n".join(lines)
    print(text, file=file or sys.stdout, flush=True)
    return text


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Timing):
        return x.as_dict()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(payload), f, indent=1)


def max_abs_diff(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    m = np.isfinite(a) & np.isfinite(b)
    if not m.any():
        return float("nan")
    return float(np.max(np.abs(a[m] - b[m])))


# ----------------------------------------------------------------------------------------------------
# Synthetic activations


def resnet_widths(L: int, scale: int = 1) -> list[int]:
    """Feature widths of ``L`` layers of a CIFAR ResNet (6m+2 family), input to pooled features.

    Layer 0 is the input image (3*32*32 = 3072); the hidden layers are split into three stages of
    16x32x32 = 16384, 32x16x16 = 8192 and 64x8x8 = 4096 features (earlier stages get the remainder); the
    last layer is the globally pooled 64-vector. ``L = 20`` gives 1 + 6 + 6 + 6 + 1 (ResNet-20 without the
    logits), ``L = 56`` gives 1 + 18 + 18 + 18 + 1. ``scale`` divides every width (for tiny smoke runs).
    """
    if L < 2:
        raise ValueError("need L >= 2 layers")
    hidden = L - 2
    base, extra = divmod(hidden, 3)
    counts = [base + (1 if i < extra else 0) for i in range(3)]
    widths = [3072]
    for c, w in zip(counts, (16384, 8192, 4096)):
        widths += [w] * c
    widths.append(64)
    return [max(4, w // scale) for w in widths]


def make_layers(
    n: int,
    widths: Sequence[int],
    *,
    dtype: str = "float32",
    seed: int = 0,
    rank: int = 128,
    drift: float = 0.35,
    noise: float = 0.25,
) -> list[np.ndarray]:
    """Synthetic "activations" ``[n, p_l]`` for a path of layers (not real network activations).

    A latent code ``F`` (``n x rank``, power-law spectrum ``j^-1/2``) performs a random walk across the
    layers (step size ``drift``); layer ``l`` is ``relu(F_l M_l + noise * sigma * E_l)`` with a random
    read-out ``M_l`` and white noise ``E_l`` at ``noise`` times the per-entry signal scale ``sigma``
    (layer 0, the "input", has no ReLU). So every layer is full-rank but has a decaying, low-rank-ish
    spectrum, consecutive layers are more similar than distant ones, and angular shape distances are
    spread over a realistic range (~0.3-1.3 rad).
    """
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype(dtype)
    r = int(min(rank, n))
    spec = (1.0 + np.arange(r)) ** -0.5
    f = rng.standard_normal((n, r)) * spec
    sigma = math.sqrt(float(np.sum(spec**2)) / r)
    layers = []
    for l, p in enumerate(widths):
        if l:
            f = f + drift * rng.standard_normal((n, r)) * spec
        m = rng.standard_normal((r, p), dtype=np.float32).astype(np_dtype) / math.sqrt(r)
        x = f.astype(np_dtype) @ m
        x += (noise * sigma) * rng.standard_normal((n, p), dtype=np.float32).astype(np_dtype, copy=False)
        if l:
            np.maximum(x, 0, out=x)
        layers.append(x)
    return layers


def pair_list(L: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(L) for j in range(i + 1, L)]


# ----------------------------------------------------------------------------------------------------
# Start and end of every script's main()


def begin_run(args) -> tuple[dict[str, Any], CpuMonitor, Any]:
    """Machine block (printed unless ``--quiet``), waits for a quiet CPU (not for ``--smoke``), starts the
    CPU monitor and imports geopath (an import failure raises). Returns ``(machine_info, monitor, geopath)``."""
    info = machine_info() if args.quiet else print_machine_info()
    gp = import_geopath()
    if not args.smoke:
        wait_for_quiet_cpu()
    return info, CpuMonitor().start(), gp


def finish_run(args, info: dict[str, Any], monitor: CpuMonitor, **results: Any) -> dict[str, Any]:
    """Stops ``monitor``, prints how busy the rest of the machine was, writes ``--json``; returns the payload."""
    others = monitor.stop()
    print(f"# other processes used {100 * others:.0f}% of the machine's CPU during this run")
    payload = {"machine": info, "others_cpu": others, "args": vars(args), **results}
    write_json(args.json, payload)
    return payload
