"""The paths experiment, end to end: train (or reuse) every network, capture every layer of a fixed
probe set at every checkpoint (cached), analyse the paths in every metric, write results and report.

Following Lange et al., "Neural Networks as Paths through the Space of Representations"
(arXiv:2206.10999): each layer's representation of the probe set is a point in a metric space of
representations, a network is the path of its layers from the input to the logits, and the one-hot
labels of the probe set are a target point in the same space. For every metric the pipeline analyses
each network's path at every checkpoint (:func:`geopath.analyze_checkpoints`: length, straightness,
turning angles, distance to target, progress along the input->target geodesic), compares the final
paths of the networks (:func:`geopath.compare_paths`) and embeds them jointly with the target by
classical MDS, and (option ``embedding``) for the angular metrics by spherical MDS on the unit sphere.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import platform
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.config import config_diff
from models.fileio import ensure_writable_dir
from models.fileio import read_json
from models.fileio import write_json_atomic

from . import cache
from .config import NUM_CLASSES
from .config import ExperimentConfig
from .config import parse_metric
from .findings import summarize
from .report import make_figures
from .report import write_report

__all__ = ["ensure_run", "select_steps", "spherical_embedding", "analyze_metric", "run_pipeline"]


# ----------------------------------------------------------------------------------------------------------
# Training (or reuse)
# ----------------------------------------------------------------------------------------------------------


def ensure_run(
    name: str,
    arch: str,
    seed: int,
    opts: ExperimentConfig,
    *,
    train_data=None,
    test_data=None,
    log=print,
) -> dict[str, Any]:
    """Trains network ``name`` (``arch`` with ``seed``) in ``<workdir>/<name>``, resumes an interrupted run,
    or reuses a finished one.

    With ``opts.train_in_subprocess`` (and no in-memory data) the training runs in its own process
    (``python -m experiments.paths.train_one``) with the CPU training flags; its progress is printed.
    """
    from models import list_checkpoints

    run_dir = Path(opts.workdir) / name
    cfg = opts.train_config(arch, seed)
    has_ckpts = (run_dir / "checkpoints").is_dir() and bool(list_checkpoints(run_dir))
    if has_ckpts and (run_dir / "config.json").exists():
        saved = read_json(run_dir / "config.json", what="run config", fix="delete the run folder to retrain")
        diff = config_diff(saved, cfg)
        if diff:
            if not opts.overwrite_runs:
                raise ValueError(
                    f"{run_dir} holds a run with a different training configuration ({diff}); "
                    "use another --workdir, or --overwrite-runs to retrain"
                )
            if opts.reuse_only:
                raise ValueError(f"{run_dir}: configuration differs and --no-train forbids retraining")
            cfg = dataclasses.replace(cfg, overwrite=True)
            has_ckpts = False
        else:
            summary_path = run_dir / "summary.json"
            if summary_path.exists():
                summary = read_json(summary_path, what="run summary", fix="delete it to resume the run")
                if not summary.get("interrupted") and summary.get("final_step") == summary.get("total_steps"):
                    log(f"[{name}] reusing finished run in {run_dir}")
                    return dict(summary, reused=True)
            cfg = dataclasses.replace(cfg, resume=True)
    elif (run_dir / "config.json").exists():
        cfg = dataclasses.replace(cfg, overwrite=True)  # a run that never wrote a checkpoint: start afresh
    if opts.reuse_only:
        if has_ckpts:
            log(f"[{name}] --no-train: using the {len(list_checkpoints(run_dir))} checkpoints in {run_dir}")
            return dict(workdir=str(run_dir), arch=arch, reused=True, final_test_acc=None)
        raise FileNotFoundError(f"--no-train but {run_dir} holds no checkpoints")
    log(f"[{name}] {'resuming' if cfg.resume else 'training'} in {run_dir}")
    if opts.train_in_subprocess and train_data is None and test_data is None:
        return dict(_train_in_subprocess(cfg, run_dir), reused=False)
    from models import train as train_lib

    summary = train_lib.train_and_evaluate(cfg, run_dir, train_data=train_data, test_data=test_data)
    return dict(summary, reused=False)


def _train_in_subprocess(cfg, run_dir: Path) -> dict[str, Any]:
    """Runs ``python -m experiments.paths.train_one`` for ``cfg`` (output shown); returns the run summary."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "experiments.paths.train_one", str(run_dir), json.dumps(cfg.to_dict())]
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        raise RuntimeError(
            f"training in {run_dir} failed (exit {rc} of python -m experiments.paths.train_one; its output is "
            "above, its log in metrics.jsonl); rerun the same command to resume it"
        )
    return read_json(run_dir / "summary.json", what="run summary")


def select_steps(steps: Sequence[int], max_n: int | None) -> list[int]:
    """All steps, or at most ``max_n`` of them spaced evenly in log(step + 1) (first and last kept)."""
    steps = sorted(set(int(s) for s in steps))
    if max_n is None or len(steps) <= max_n:
        return steps
    pos = np.log1p(np.asarray(steps, float))
    targets = np.linspace(pos[0], pos[-1], max_n)
    idx = sorted({int(np.argmin(np.abs(pos - t))) for t in targets} | {0, len(steps) - 1})
    return [steps[i] for i in idx]


# ----------------------------------------------------------------------------------------------------------
# Analysis
# ----------------------------------------------------------------------------------------------------------


def _dedupe_layers(names: Sequence[str], reps: Sequence[np.ndarray]) -> list[int]:
    """Indices of layers to keep: drops a layer identical to the previous kept one (e.g. VGG pool5 vs
    features on a 1x1 map); a repeated point has zero step length and an undefined turning angle."""
    keep = [0]
    for i in range(1, len(reps)):
        prev = reps[keep[-1]]
        if reps[i].shape == prev.shape and np.array_equal(reps[i], prev):
            continue
        keep.append(i)
    return keep


def _tolist(x) -> Any:
    a = np.asarray(x)
    if a.dtype.kind == "f":
        a = a.astype(np.float64)
        if a.ndim == 0:
            v = float(a)
            return v if math.isfinite(v) else None
        return (
            [(_tolist(v)) for v in a] if a.ndim > 1 else [float(v) if math.isfinite(v) else None for v in a]
        )
    return a.tolist()


def _analysis_dict(a) -> dict[str, Any]:
    return {f: _tolist(getattr(a, f)) for f in a._fields}


def spherical_embedding(D: np.ndarray, *, units: str, dim: int = 3) -> dict[str, Any]:
    """Spherical MDS (:func:`geopath.spherical_mds`) of the joint distances ``D [L, L]`` on ``S^{dim-1}``.

    Returns ``{"coords": [L, dim] unit vectors, "stress": Kruskal stress of their great-circle distances
    against D, "dim": dim}``; for a metric whose distances are not angles (``units != "radians"``) there is
    nothing to embed on a sphere: ``{"coords": None, "stress": None, "dim": dim, "skipped": why}``.
    """
    import geopath as gp

    if units != "radians":
        return dict(coords=None, stress=None, dim=dim, skipped=f"distances are not angles ({units})")
    sph = gp.spherical_mds(D, dim=dim)
    return dict(coords=_tolist(sph.coords), stress=float(sph.stress), dim=dim)


def _projection_intervals(space, pts: Sequence[Any], target: Any, proj_t, *, tol: float) -> dict[str, Any]:
    """For every layer ``p_i`` of a path: the interval ``[lo, hi]`` of projection fractions t along the
    geodesic input -> target whose residual ``d(p_i, gamma(t))`` lies within ``tol`` of its minimum
    (:func:`geopath.projection_intervals`, from the analysis' projections ``proj_t``), searched in
    ``[-1, 2]``; ``t`` is the projection unless it lies outside that range (``projected`` False), and
    ``clipped_lo`` / ``clipped_hi`` say where an end hit the range."""
    import jax

    import geopath as gp

    res = jax.device_get(gp.projection_intervals(space, pts, target, proj_t=proj_t, tol=tol))
    return dict(
        tol=tol,
        t=_tolist(res.t),
        lo=_tolist(res.lo),
        hi=_tolist(res.hi),
        projected=[bool(v) for v in np.asarray(res.projected)],
        clipped_lo=[bool(v) for v in np.asarray(res.clipped_lo)],
        clipped_hi=[bool(v) for v in np.asarray(res.clipped_hi)],
    )


def analyze_metric(
    metric: str,
    runs: Mapping[str, Mapping[str, Any]],
    labels: np.ndarray,
    *,
    precision: str,
    progress: bool,
    embedding: str = "classical",
    mesh: Any = None,
    final_labels: np.ndarray | None = None,
    interval_tol: float = 1e-3,
) -> dict[str, Any]:
    """Path analysis of every network at every checkpoint, joint distances and comparisons, for one metric.

    ``runs[name]`` holds ``steps``, ``names``, ``keep`` (indices of the analysed layers), ``reps``
    (``{step: [compact [n, k] array per layer]}``) and optionally ``final_reps`` (the last checkpoint's
    layers on a larger probe set ``[n_final, k]``, whose labels are ``final_labels``); ``labels [n]`` are
    the probe labels of ``reps`` (the target). The geometry over training (``training``) uses ``reps``;
    the final geometry (``final``: the path, the projection intervals at tolerance ``interval_tol``, the
    joint matrix and the comparisons) uses ``final_reps`` (or the last step of ``reps``).
    ``embedding`` (``"classical"``, ``"spherical"`` or ``"both"``): with a spherical one, the joint
    distances are also embedded by :func:`spherical_embedding` (``joint["spherical_mds"]``).
    ``mesh`` (a ``jax.sharding.Mesh``, e.g. ``gp.device_mesh()``): the checkpoints of each network and the
    pairs of the joint matrix are sharded over its devices (the numbers do not depend on it).
    """
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    import geopath as gp

    spec = parse_metric(metric)
    space = spec.make()
    dtype = np.float64 if precision == "float64" else np.float32
    out: dict[str, Any] = dict(
        name=metric, description=spec.description, units=spec.units, space=repr(space), per_arch={}, timing={}
    )
    final_points: dict[str, list] = {}
    with jax.enable_x64(precision == "float64"):
        t0 = time.time()
        target = gp.target_point(space, jnp.asarray(labels, jnp.int32), num_classes=NUM_CLASSES)
        target_final = (
            target
            if final_labels is None
            else gp.target_point(space, jnp.asarray(final_labels, jnp.int32), num_classes=NUM_CLASSES)
        )
        bar = tqdm(total=len(runs), desc=f"paths [{metric}]", unit="net", disable=not progress, leave=False)
        for arch, run in runs.items():
            reps = [[np.asarray(run["reps"][step][i], dtype) for i in run["keep"]] for step in run["steps"]]
            stacked = jax.device_get(gp.analyze_checkpoints(space, reps, target, mesh=mesh))
            if run.get("final_reps") is not None and run["final_reps"] is not run["reps"][run["steps"][-1]]:
                last = [np.asarray(run["final_reps"][i], dtype) for i in run["keep"]]
                fin = jax.device_get(gp.analyze_checkpoints(space, [last], target_final))
                final = type(fin)(*[f[0] for f in fin])
            else:
                last = reps[-1]
                final = type(stacked)(*[f[-1] for f in stacked])
            final_points[arch] = gp.points(space, last)
            out["per_arch"][arch] = dict(
                layers=[run["names"][i] for i in run["keep"]],
                steps=list(run["steps"]),
                final=_analysis_dict(final),
                interval=_projection_intervals(
                    space, final_points[arch], target_final, np.asarray(final.proj_t), tol=interval_tol
                ),
                training=_analysis_dict(stacked),
                _stacked=stacked,
                _final=final,
            )
            bar.update(1)
        bar.close()
        out["timing"]["paths_s"] = time.time() - t0

        # Joint distance matrix of all final paths and the target, MDS embedding, pairwise comparisons.
        t0 = time.time()
        labels_joint, pts_joint, bounds = [], [], []
        for arch, pts in final_points.items():
            labels_joint += [f"{arch}:{n}" for n in out["per_arch"][arch]["layers"]]
            pts_joint += list(pts)
            bounds.append(len(pts_joint))
        labels_joint.append("target")
        pts_joint.append(target_final)
        D = np.asarray(gp.pairwise_distances(space, pts_joint, are_points=True, mesh=mesh), np.float64)
        mds = gp.classical_mds(D, dim=2)
        ev = np.asarray(mds.eigenvalues, np.float64)
        pos = ev[ev > 0]
        out["joint"] = dict(
            labels=labels_joint,
            boundaries=bounds[:-1] + [bounds[-1]],
            distances=_tolist(D),
            mds_coords=_tolist(mds.coords),
            mds_stress=float(mds.stress),
            mds_explained=float(ev[:2].clip(min=0).sum() / pos.sum()) if pos.size else None,
        )
        if embedding in ("spherical", "both"):
            out["joint"]["spherical_mds"] = spherical_embedding(D, units=spec.units)
        comps = {}
        archs = list(final_points)
        starts = [0] + bounds[:-1]  # row ranges of each network's layers in the joint matrix D
        for i in range(len(archs)):
            for j in range(i + 1, len(archs)):
                cross = D[starts[i] : bounds[i], starts[j] : bounds[j]]  # d(a_k, b_l), already computed
                c = gp.compare_paths(space, final_points[archs[i]], final_points[archs[j]], cross=cross)
                comps[f"{archs[i]} vs {archs[j]}"] = dict(
                    mean_aligned=float(c.mean_aligned),
                    aligned=_tolist(c.aligned),
                    depth=_tolist(c.depth),
                    method="geodesic interpolation, linear in relative depth",
                )
        out["comparisons"] = comps
        out["timing"]["joint_s"] = time.time() - t0
    return out


# ----------------------------------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------------------------------


def _load_probe(opts: ExperimentConfig, probe_data=None):
    """The final-checkpoint probe set, the trajectory probe set (its first ``trajectory_per_class`` images
    of each class: :func:`models.data.probe_set` draws both from one permutation per class) and the
    source."""
    from models.data import load_cifar10
    from models.data import probe_set

    if probe_data is None:
        t = opts.training
        probe_data = load_cifar10(opts.probe_split, data_dir=t.data_dir, source=t.data_source)
    final = probe_set(probe_data, per_class=opts.probe_per_class, seed=opts.probe_seed)
    k = opts.trajectory_probe_per_class()
    traj = final if k == opts.probe_per_class else probe_set(probe_data, per_class=k, seed=opts.probe_seed)
    return final, traj, getattr(probe_data, "source", "in-memory")


def _capture_all(
    opts: ExperimentConfig, probe, traj_probe, cache_dir: Path, stats: dict[str, int]
) -> dict[str, dict]:
    """Representations of every analysed checkpoint of every network on ``traj_probe``, and of its final
    checkpoint on ``probe`` (from the cache when possible)."""
    from tqdm.auto import tqdm

    from models import list_checkpoints

    from .config import family

    same = probe.hash == traj_probe.hash
    traj_labels = np.asarray(traj_probe.labels)
    plan = {}
    for name, _, _ in opts.networks():
        run_dir = Path(opts.workdir) / name
        steps = list_checkpoints(run_dir, scheduled_only=True) or list_checkpoints(run_dir)
        plan[name] = select_steps(steps, opts.max_checkpoints)
    bar = tqdm(
        total=sum(len(s) + (not same) for s in plan.values()),
        desc="representations",
        unit="ckpt",
        disable=not opts.progress,
    )
    runs: dict[str, dict[str, Any]] = {}
    for name, arch, seed in opts.networks():
        run_dir = Path(opts.workdir) / name
        reps, names, meta, acc = {}, None, {}, []
        for step in plan[name]:
            bar.set_postfix_str(f"{name} step {step}")
            r = cache.load_or_capture(
                cache_dir, run_dir, name, step, traj_probe, opts.capture_batch_size, stats
            )
            if names is None:
                names = r["names"]
            elif r["names"] != names:
                raise RuntimeError(f"{name}: layer names differ between checkpoints")
            reps[step] = r["reps"]
            meta[step] = r["meta"]
            acc.append(float(np.mean(np.argmax(r["logits"], axis=1) == traj_labels)))
            bar.update(1)
        last = plan[name][-1]
        if same:
            final_reps, final_acc = reps[last], acc[-1]
        else:
            bar.set_postfix_str(f"{name} step {last}, final probe")
            r = cache.load_or_capture(cache_dir, run_dir, name, last, probe, opts.capture_batch_size, stats)
            final_reps = r["reps"]
            final_acc = float(np.mean(np.argmax(r["logits"], axis=1) == np.asarray(probe.labels)))
            bar.update(1)
        keep = _dedupe_layers(names, final_reps)
        runs[name] = dict(
            arch=arch,
            seed=seed,
            family=family(arch),
            steps=plan[name],
            names=names,
            reps=reps,
            final_reps=final_reps,
            keep=keep,
            meta=meta,
            probe_accuracy=acc,
            final_probe_accuracy=final_acc,
        )
    bar.close()
    return runs


def run_pipeline(
    opts: ExperimentConfig, *, train_data=None, test_data=None, probe_data=None, log=None
) -> dict[str, Any]:
    """Runs the whole experiment; returns the results dict (also written to ``<out>/results.json``).

    ``train_data`` / ``test_data`` / ``probe_data`` (a :class:`models.data.Dataset` or anything with
    ``images`` and ``labels``) replace the CIFAR-10 loads, e.g. in tests.
    """
    from tqdm.auto import tqdm

    opts.validate()
    if log is None:

        def log(msg):
            tqdm.write(msg) if opts.progress else print(msg, flush=True)

    t_all = time.time()
    timing: dict[str, float] = {}
    out_dir = Path(opts.out)
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else Path(opts.workdir) / "rep_cache"
    # Every folder the run writes is checked before anything is trained (one clear error naming it).
    ensure_writable_dir(out_dir, what="--out folder")
    ensure_writable_dir(opts.workdir, what="--workdir")
    ensure_writable_dir(cache_dir, what="representation cache folder")

    probe, traj_probe, probe_source = _load_probe(opts, probe_data)
    log(
        f"probe sets: {len(probe.labels)} images (final geometry, hash {probe.hash}) and "
        f"{len(traj_probe.labels)} (over training, hash {traj_probe.hash}) from {probe_source}"
    )

    t0 = time.time()
    summaries = {
        name: ensure_run(name, arch, seed, opts, train_data=train_data, test_data=test_data, log=log)
        for name, arch, seed in opts.networks()
    }
    timing["training_s"] = time.time() - t0

    t0 = time.time()
    stats = {"captures": 0, "cache_hits": 0}
    runs = _capture_all(opts, probe, traj_probe, cache_dir, stats)
    timing["representations_s"] = time.time() - t0
    log(f"representations: {stats['captures']} captured, {stats['cache_hits']} from cache ({cache_dir})")

    metrics_res = {}
    mesh = None
    if opts.shard:
        import geopath as gp

        mesh = gp.device_mesh()
        log(f"analysis sharded over {mesh.size} device(s) ({mesh.devices.flat[0].platform})")
    for metric in opts.metrics:
        t0 = time.time()
        metrics_res[metric] = analyze_metric(
            metric,
            runs,
            np.asarray(traj_probe.labels),
            final_labels=np.asarray(probe.labels),
            precision=opts.precision,
            progress=opts.progress,
            embedding=opts.embedding,
            mesh=mesh,
            interval_tol=opts.interval_tol,
        )
        timing[f"analysis_{metric}_s"] = time.time() - t0

    res = _results(opts, runs, summaries, metrics_res, probe, traj_probe, probe_source, train_data)
    res["findings"] = summarize(res)
    res["cache"] = dict(dir=str(cache_dir), **stats)

    t0 = time.time()
    figures = make_figures(res, out_dir / "figures")
    timing["figures_s"] = time.time() - t0
    timing["total_s"] = time.time() - t_all
    res["timing"] = timing
    res["figures"] = {k: [os.path.relpath(f, out_dir) for f in v] for k, v in figures.items()}
    serialisable = _strip_private(res)
    write_json_atomic(out_dir / "results.json", serialisable)
    report = write_report(res, out_dir, figures)
    log(
        f"wrote {out_dir / 'results.json'}, {report} and {sum(len(v) for v in figures.values())} figure files"
    )
    return serialisable


def _portable_source(source: str) -> str:
    """The probe source without this machine's folder (committed reports must not carry absolute paths)."""
    kind, sep, path = source.partition(":")
    if sep and os.path.isabs(path):
        return f"{kind}:<data dir>/{Path(path).name}"
    return source


def _probe_entry(probe, source: str) -> dict[str, Any]:
    return dict(
        n=int(len(probe.labels)),
        hash=probe.hash,
        source=f"`{_portable_source(source)}`",
        indices=[int(i) for i in probe.indices],
    )


def _results(
    opts, runs, summaries, metrics_res, probe, traj_probe, probe_source, train_data
) -> dict[str, Any]:
    """The results dict (everything but findings, cache, timing and figures)."""
    t = opts.training
    return dict(
        created=_dt.datetime.now().isoformat(timespec="seconds"),
        paper="Lange et al., Neural Networks as Paths through the Space of Representations, arXiv:2206.10999",
        options=dataclasses.asdict(opts),
        environment=dict(python=platform.python_version(), platform=platform.platform(), **_versions()),
        data=dict(
            train=(
                f"in-memory data `{getattr(train_data, 'source', 'arrays')}`"
                if train_data is not None
                else f"CIFAR-10 ({t.data_source} source{', ' + str(t.data_dir) if t.data_dir else ''})"
            ),
            n_train=next(
                (m.get("n_train") for r in runs.values() for m in r["meta"].values() if m.get("n_train")),
                None,
            ),
        ),
        probe=_probe_entry(probe, probe_source),
        trajectory_probe=_probe_entry(traj_probe, probe_source),
        archs={
            name: dict(
                arch=r["arch"],
                family=r["family"],
                seed=r["seed"],
                layers=[r["names"][i] for i in r["keep"]],
                all_layers=r["names"],
                dropped_layers=[n for i, n in enumerate(r["names"]) if i not in r["keep"]],
                steps=r["steps"],
                probe_accuracy=r["probe_accuracy"],
                final_probe_accuracy=r["final_probe_accuracy"],
                checkpoint_meta=[r["meta"][s] for s in r["steps"]],
                final_test_acc=summaries[name].get("final_test_acc"),
                final_test_acc_tta=summaries[name].get("final_test_acc_tta"),
                run=dict((k, v) for k, v in summaries[name].items() if k not in ("checkpoints", "workdir")),
            )
            for name, r in runs.items()
        },
        final_test_acc={name: summaries[name].get("final_test_acc") for name in runs},
        metrics=metrics_res,
    )


def _strip_private(obj):
    if isinstance(obj, dict):
        return {
            k: _strip_private(v) for k, v in obj.items() if not (isinstance(k, str) and k.startswith("_"))
        }
    if isinstance(obj, (list, tuple)):
        return [_strip_private(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("jax", "flax", "optax", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            pass
    return out
