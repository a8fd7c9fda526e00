"""Figures and ``report.md`` of the paths experiment, written from the results dict of the pipeline."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.fileio import write_text_atomic

from .config import NUM_CLASSES

__all__ = ["make_figures", "write_report"]


def make_figures(res: Mapping[str, Any], fig_dir: Path) -> dict[str, list[str]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from geopath import plotting

    files: dict[str, list[str]] = {}
    for metric, m in res["metrics"].items():
        units = m["units"]
        per = m["per_arch"]
        joint = m["joint"]
        coords = np.asarray(joint["mds_coords"])
        starts = [0] + joint["boundaries"][:-1]
        ends = joint["boundaries"]
        by_model = {arch: coords[s:e] for arch, s, e in zip(per, starts, ends)}
        layer_labels = {arch: per[arch]["layers"] for arch in per}
        fl = []
        fig = plotting.plot_paths_2d(
            by_model,
            target=coords[-1],
            units=units,
            layer_labels=layer_labels,
            title=f"Final networks as paths, {m['description']}\n"
            f"(classical MDS of all layers + target; stress {joint['mds_stress']:.3f})",
        )
        fl += plotting.save_figure(fig, fig_dir / f"paths_mds_{metric}")
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
