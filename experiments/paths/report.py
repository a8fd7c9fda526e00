"""Figures and ``report.md`` of the paths experiment, written from the results dict of the pipeline."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.fileio import write_text_atomic

from .config import NUM_CLASSES

__all__ = ["make_figures", "write_report", "azimuthal_map"]


def _split_paths(coords: np.ndarray, per: Mapping[str, Any], joint: Mapping[str, Any]) -> dict[str, Any]:
    """Rows of the joint embedding ``coords`` per network (the target is the last row)."""
    starts = [0] + joint["boundaries"][:-1]
    return {arch: coords[s:e] for arch, s, e in zip(per, starts, joint["boundaries"])}


def azimuthal_map(X: np.ndarray) -> np.ndarray:
    """``[L, 2]`` azimuthal equidistant map of unit vectors ``X [L, 3]`` about their mean direction ``c``.

    A point at angle ``theta = arccos(x . c)`` from the centre lands at distance ``theta`` (radians) from the
    origin, in the direction of its tangent vector at ``c``: distances to the centre are exact, and the
    other great-circle distances are distorted little within a cap around it. The in-plane axes are the
    principal directions of the tangent vectors (signs fixed), so that a figure is reproducible.
    """
    X = np.asarray(X, float)
    c = X.mean(axis=0)
    c = c / np.linalg.norm(c) if np.linalg.norm(c) > 1e-8 else X[0]
    T = X - np.outer(X @ c, c)  # tangent components at c
    basis = np.linalg.svd(T, full_matrices=True)[2]  # rows by decreasing singular value
    e1 = next(e for e in (b - (b @ c) * c for b in basis) if np.linalg.norm(e) > 0.5)
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.cross(c, e1)
    theta = np.arccos(np.clip(X @ c, -1.0, 1.0))
    norm = np.linalg.norm(T, axis=1)
    d = np.where(norm[:, None] > 1e-12, T / np.where(norm > 1e-12, norm, 1.0)[:, None], 0.0)
    P = theta[:, None] * np.stack([d @ e1, d @ e2], axis=1)
    for k in range(2):  # sign: the entry of largest magnitude positive
        if P[np.argmax(np.abs(P[:, k])), k] < 0:
            P[:, k] = -P[:, k]
    return P


def _sphere_figure(plotting, coords: np.ndarray, per, joint, title: str):
    """The paths of a spherical embedding, drawn as an azimuthal equidistant map (:func:`azimuthal_map`)
    with circles at pi/4 and pi/2 from the centre."""
    P = azimuthal_map(coords)
    fig = plotting.plot_paths_2d(
        _split_paths(P, per, joint),
        target=P[-1],
        units="radians from the centre",
        layer_labels={arch: per[arch]["layers"] for arch in per},
        title=title,
    )
    ax = fig.axes[0]
    t = np.linspace(0, 2 * np.pi, 200)
    for r in (np.pi / 4, np.pi / 2):
        if r <= 1.5 * np.abs(P).max():
            ax.plot(r * np.cos(t), r * np.sin(t), color="gray", lw=0.6, ls=":", alpha=0.7)
    return fig


def make_figures(res: Mapping[str, Any], fig_dir: Path) -> dict[str, list[str]]:
    """Writes every figure (PNG + PDF) under ``fig_dir``; returns ``{metric or "accuracy": [files]}``.

    Per metric: the paths in the joint embedding (classical MDS, ``paths_mds_<metric>``, unless the
    experiment's ``embedding`` option is ``"spherical"`` and the metric has a spherical embedding; spherical
    MDS, ``paths_spherical_<metric>``, when ``results`` holds one), the distance matrix, depth profiles and
    the geometry over training.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from geopath import plotting

    embedding = res.get("options", {}).get("embedding", "classical")
    files: dict[str, list[str]] = {}
    for metric, m in res["metrics"].items():
        units = m["units"]
        per = m["per_arch"]
        joint = m["joint"]
        sph = joint.get("spherical_mds") or {}
        fl = []
        if embedding != "spherical" or sph.get("coords") is None:
            coords = np.asarray(joint["mds_coords"])
            fig = plotting.plot_paths_2d(
                _split_paths(coords, per, joint),
                target=coords[-1],
                units=units,
                layer_labels={arch: per[arch]["layers"] for arch in per},
                title=f"Final networks as paths, {m['description']}\n"
                f"(classical MDS of all layers + target; stress {joint['mds_stress']:.3f})",
            )
            fl += plotting.save_figure(fig, fig_dir / f"paths_mds_{metric}")
        if sph.get("coords") is not None:
            fig = _sphere_figure(
                plotting,
                np.asarray(sph["coords"], float),
                per,
                joint,
                title=f"Final networks as paths, {m['description']}\n(spherical MDS on S^2, "
                f"azimuthal equidistant map; stress {sph['stress']:.3f})",
            )
            fl += plotting.save_figure(fig, fig_dir / f"paths_spherical_{metric}")
        fig = plotting.plot_distance_matrix(
            np.asarray(joint["distances"]),
            joint["labels"],
            boundaries=joint["boundaries"],
            units=units,
            title=f"Distances between all layers of the final networks and the target\n{m['description']}",
        )
        fl += plotting.save_figure(fig, fig_dir / f"distances_{metric}")
        fig = plotting.plot_depth_profiles(
            {arch: per[arch]["_final"] for arch in per},
            units=units,
            title=f"Layer-by-layer geometry of the final networks ({m['description']})",
        )
        fl += plotting.save_figure(fig, fig_dir / f"depth_profiles_{metric}")
        fig = plotting.plot_training(
            {arch: per[arch]["_stacked"] for arch in per},
            {arch: per[arch]["steps"] for arch in per},
            units=units,
            title=f"Path geometry over training ({m['description']})",
        )
        fl += plotting.save_figure(fig, fig_dir / f"training_{metric}")
        files[metric] = fl
    # accuracy over training (probe set = held-out images)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    all_steps = []
    for arch, a in res["archs"].items():
        st = np.asarray(a["steps"], float)
        all_steps.append(st)
        ax.plot(st, np.asarray(a["probe_accuracy"]) * 100, marker="o", ms=3.5, label=arch)
    pos = np.concatenate(all_steps) if all_steps else np.zeros(0)
    pos = pos[pos > 0]
    ax.set_xscale("symlog", linthresh=float(pos.min()) if pos.size else 1.0)
    ax.axhline(100.0 / NUM_CLASSES, color="gray", ls="--", lw=0.8, label="chance")
    ax.set_xlabel("training step (log scale; 0 = initialisation)")
    ax.set_ylabel("probe-set accuracy (%)")
    ax.set_title("Accuracy on the probe set (held-out images) over training")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
    files["accuracy"] = list(plotting.save_figure(fig, fig_dir / "accuracy"))
    return files


def _fmt(x, nd=3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def write_report(res: Mapping[str, Any], out_dir: Path, figures: Mapping[str, list[str]]) -> Path:
    def rel(p):
        return os.path.relpath(p, out_dir)

    def png(files):
        return [f for f in files if f.endswith(".png")]

    o = res["options"]
    t = o["training"]
    lines = [
        "# Networks as paths through representation space",
        "",
        f"Generated {res['created']} by `python -m experiments.paths` (preset `{o.get('preset')}`). "
        "All numbers are also in `results.json`.",
        "",
        "## Setup",
        "",
        f"- Networks: {', '.join(f'`{a}`' for a in res['archs'])}; trained on {res['data']['train']} "
        f"({_fmt(res['data']['n_train'])} training images, {t['epochs']} epochs, "
        f"batch {t['batch_size']}, SGD lr {t['lr']} {t['schedule']}, seed {t['seed']}).",
        f"- Probe set: {res['probe']['n']} images ({o['probe_per_class']} per class) from "
        f"{res['probe']['source']}, hash `{res['probe']['hash']}`. Every layer's representation of these "
        "images (from the input pixels to the logits) is a point; the network is the path through them.",
        "- Target: the one-hot label matrix of the probe set, as a point of the same space.",
        "- Metrics: "
        + "; ".join(f"`{k}` = {v['description']} ({v['units']})" for k, v in res["metrics"].items())
        + ".",
        f"- Geometry computed in {o['precision']}. Straightness = d(input, target) / path length "
        "(1 for a path that runs straight to the target). Turning angle at a layer = pi - the angle between "
        "the geodesics to the previous and next layer (0 = straight on). Progress t = fraction along the "
        "input->target geodesic of the point nearest the layer.",
        "",
        "## Accuracy",
        "",
        "| network | layers analysed | checkpoints | probe accuracy at init | final probe accuracy | final test accuracy (run) |",
        "|---|---|---|---|---|---|",
    ]
    for arch, a in res["archs"].items():
        lines.append(
            f"| `{arch}` | {len(a['layers'])} | {len(a['steps'])} (steps {a['steps'][0]}..{a['steps'][-1]}) | "
            f"{_fmt(a['probe_accuracy'][0])} | {_fmt(a['probe_accuracy'][-1])} | {_fmt(a.get('final_test_acc'))} |"
        )
        if a["dropped_layers"]:
            lines.append("")
            lines.append(
                f"  (`{arch}`: dropped layer(s) identical to the previous one: "
                f"{', '.join(a['dropped_layers'])})"
            )
    if "accuracy" in figures:
        lines += ["", f"![accuracy]({rel(png(figures['accuracy'])[0])})", ""]
    for metric, m in res["metrics"].items():
        u = m["units"]
        lines += [
            "",
            f"## Metric `{metric}`: {m['description']}",
            "",
            f"Final checkpoint of each network (distances in {u}):",
            "",
            "| network | path length | d(input, target) | straightness | d(last layer, target) | "
            "progress t of last layer | mean turning angle (rad) | straightness at init |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for arch, pa in m["per_arch"].items():
            f = pa["final"]
            tr = pa["training"]
            turning = [v for v in (f["turning"] or []) if v is not None]
            lines.append(
                f"| `{arch}` | {_fmt(f['length'])} | {_fmt(f['direct'])} | {_fmt(f['straightness'])} | "
                f"{_fmt(f['dist_to_target'][-1])} | {_fmt(f['proj_t'][-1])} | "
                f"{_fmt(float(np.mean(turning)) if turning else None)} | {_fmt(tr['straightness'][0])} |"
            )
        j = m["joint"]
        lines += [
            "",
            f"Joint classical MDS of all final layers and the target: Kruskal stress {j['mds_stress']:.3f}, "
            f"the two dimensions carry {_fmt(j['mds_explained'])} of the positive eigenvalue mass.",
            "",
        ]
        sph = j.get("spherical_mds")
        if sph is not None:
            if sph.get("coords") is None:
                lines += [f"No spherical MDS: {sph['skipped']}.", ""]
            else:
                lines += [
                    f"Joint spherical MDS on the unit sphere S^{sph['dim'] - 1} (great-circle distances fitted "
                    f"to the metric's angles): Kruskal stress {sph['stress']:.3f}.",
                    "",
                ]
        if m["comparisons"]:
            lines += [
                "Distance between final paths at matched relative depth (mean over the depth grid, "
                f"{u}; geodesic interpolation between layers):",
                "",
                "| pair | mean aligned distance |",
                "|---|---|",
            ]
            for pair, c in m["comparisons"].items():
                lines.append(f"| {pair} | {_fmt(c['mean_aligned'])} |")
            lines.append("")
        names = {
            "paths_mds": "paths (MDS)",
            "paths_spherical": "paths (spherical MDS)",
            "distances": "distance matrix",
            "depth_profiles": "depth profiles",
            "training": "over training",
        }
        for f in png(figures.get(metric, [])):
            stem = Path(f).stem
            kind = next((v for k, v in names.items() if stem.startswith(k)), stem)
            lines += [f"![{metric}: {kind}]({rel(f)})", ""]
        lines += [
            "PDF versions: "
            + ", ".join(f"[{Path(f).name}]({rel(f)})" for f in figures.get(metric, []) if f.endswith('.pdf')),
            "",
        ]
    timing = res["timing"]
    lines += [
        "## Timing",
        "",
        ", ".join(f"{k}: {v:.1f} s" for k, v in timing.items() if isinstance(v, (int, float))),
        "",
        f"Cache: {res['cache']['captures']} captures, {res['cache']['cache_hits']} reused from "
        f"`{res['cache']['dir']}`.",
        "",
    ]
    path = out_dir / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path
