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


_FAMILY_COLOURS = {"resnet": "tab:blue", "vgg": "tab:orange"}


def _question_figures(res, metric: str, m, fig_dir: Path, plotting) -> list[str]:
    """Distance to the target and turning angle against relative depth, and the position of every layer,
    one line per network coloured by family (the figures of questions 1 and 2)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.0), layout="constrained")
    axes = fig.subplots(1, 3)
    seen = set()
    for name, pa in m["per_arch"].items():
        fam = res["archs"][name].get("family", name)
        colour = _FAMILY_COLOURS.get(fam)
        label = fam if fam not in seen else None
        seen.add(fam)
        fin = pa["final"]
        L = len(pa["layers"])
        depth = np.linspace(0, 1, L)
        d = np.asarray([np.nan if v is None else v for v in fin["dist_to_target"]], float)
        axes[0].plot(depth, d, marker="o", ms=3, color=colour, alpha=0.8, label=label)
        tu = np.asarray([np.nan if v is None else v for v in fin["turning"]], float)
        axes[1].plot(depth[1:-1], tu, marker="o", ms=3, color=colour, alpha=0.8, label=label)
        pos = np.asarray([np.nan if v is None else v for v in fin["position"]], float)
        axes[2].plot(depth, pos, marker="o", ms=3, color=colour, alpha=0.8, label=label)
        iv = pa.get("interval")
        if iv is not None:
            lo = np.asarray([np.nan if v is None else v for v in iv["lo"]], float)
            hi = np.asarray([np.nan if v is None else v for v in iv["hi"]], float)
            axes[2].fill_between(depth, lo, hi, color=colour, alpha=0.08, lw=0)
    u = m["units"]
    axes[0].set_ylabel(f"distance to target ({u})")
    axes[0].set_title("1. Closer to the target, layer by layer?")
    axes[1].set_ylabel("turning angle (rad)")
    axes[1].set_title("2. Where do the paths turn?")
    axes[2].set_ylabel("position d(x,p) / (d(x,p) + d(p,y))")
    axes[2].set_title("Position (lines) and t intervals (bands)")
    axes[2].set_ylim(-0.6, 1.6)
    for ax in axes:
        ax.set_xlabel("relative depth (0 = input, 1 = logits)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Final networks, {m['description']}")
    return list(plotting.save_figure(fig, fig_dir / f"questions_{metric}"))


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
        fl += _question_figures(res, metric, m, fig_dir, plotting)
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


def _ms(st: Mapping[str, Any], nd: int = 3, scale: float = 1.0) -> str:
    """``mean +- sd [min, max]`` of a :func:`findings.stats` dict (just the value for one seed)."""
    if not st or not st["n"]:
        return "n/a"
    if st["n"] == 1:
        return f"{st['mean'] * scale:.{nd}f}"
    return (
        f"{st['mean'] * scale:.{nd}f} +- {st['sd'] * scale:.{nd}f} "
        f"[{st['min'] * scale:.{nd}f}, {st['max'] * scale:.{nd}f}]"
    )


def _verdict(c: Mapping[str, Any] | None) -> str:
    if c is None or c.get("difference") is None:
        return "n/a"
    if not c["assessable"]:
        return f"{c['difference']:+.3f} (one seed: not assessed)"
    return f"{c['difference']:+.3f} ({'**finding**' if c['finding'] else 'within seed spread'})"


def _recipe(t: Mapping[str, Any]) -> str:
    opt = t.get("optimizer", "sgd")
    lr = f"lr {t['lr']}" + (f", Muon lr {t['muon_lr']}" if opt == "muon" else "")
    return f"{opt} ({lr}, {t['schedule']} schedule), batch {t['batch_size']}, {t['epochs']} epochs"


_QUESTION_ROWS = (
    ("straightness", "straightness d(x, y) / length", 3),
    ("length", "path length", 3),
    ("mean_turning", "mean turning angle (rad)", 3),
    ("last_dist_to_target", "d(logits, target)", 3),
    ("last_position", "position of the logits", 3),
    ("last_t", "projection t of the logits", 3),
    ("last_t_width", "width of its t interval", 3),
    ("straightness_init", "straightness at initialisation (n_traj)", 3),
    ("straightness_traj_final", "straightness at the end (n_traj)", 3),
    ("last_dist_to_target_init", "d(logits, target) at initialisation (n_traj)", 3),
    ("last_dist_to_target_traj_final", "d(logits, target) at the end (n_traj)", 3),
)


def _question_lines(res: Mapping[str, Any], metric: str, m: Mapping[str, Any]) -> list[str]:
    f = res["findings"]["metrics"][metric]
    fams = res["findings"]["families"]
    u = m["units"]
    lines = []
    # 1. closer to the target
    lines += [
        "**1. Does each layer move the representation closer to the target?**",
        "",
        "| network | d(layer, target) from input to logits | steps closer | layers that move away |",
        "|---|---|---|---|",
    ]
    for name, pn in f["per_network"].items():
        d = ", ".join(f"{v:.3f}" for v in pn["dist_to_target"])
        away = ", ".join(f"`{x}`" for x in pn["away_layers"]) or "none"
        lines.append(f"| `{name}` | {d} | {pn['closer_steps']} / {pn['steps']} | {away} |")
    lines.append("")
    lines.append(
        "Monotone paths (every layer closer than the one before): "
        + "; ".join(f"{fam} {f['families'][fam]['monotone']} of {len(names)}" for fam, names in fams.items())
        + "."
    )
    lines.append("")
    # 2 + 3: family table with the comparison
    vs = f.get("resnet_vs_vgg")
    header = "| quantity (" + u + ") | " + " | ".join(fams) + (" | ResNet - VGG |" if vs else " |")
    lines += [
        "**2. How straight are the paths, and where do they turn? 3. How do they form over training?** "
        "Family mean +- sd [min, max] over seeds; final checkpoint on the n = "
        f"{res['probe']['n']} probe set unless marked n_traj (the n = {res['trajectory_probe']['n']} set).",
        "",
        header,
        "|---|" + "---|" * len(fams) + ("---|" if vs else ""),
    ]
    for q, label, nd in _QUESTION_ROWS:
        row = f"| {label} | " + " | ".join(_ms(f["families"][fam][q], nd) for fam in fams)
        lines.append(row + (f" | {_verdict(vs.get(q))} |" if vs else " |"))
    lines.append("")
    turns = "; ".join(
        f"`{n}` at `{pn['max_turning_layer']}` ({_fmt(pn['max_turning'], 2)} rad)"
        for n, pn in f["per_network"].items()
    )
    lines += [f"Largest turn of each path: {turns}.", ""]
    al = f["aligned"]
    if al:
        lines += [
            "Distance between final paths at matched relative depth (mean over depth, "
            f"{u}), by pair of families:",
            "",
            "| pairs | mean +- sd [min, max] |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_ms(v)} |" for k, v in al.items()]
        wa = f["aligned_within_vs_across"]
        if wa["within"]["n"] and wa["across"]["n"]:
            lines += [
                "",
                f"Across families minus within a family (seed to seed): {_verdict(wa)}.",
            ]
        lines.append("")
    return lines


def _support_lines(res: Mapping[str, Any]) -> list[str]:
    """What the data support and what they do not, from the findings (generated)."""
    sup, nots = [], []
    for metric, f in res["findings"]["metrics"].items():
        for q, c in (f.get("resnet_vs_vgg") or {}).items():
            label = dict((k, lbl) for k, lbl, _ in _QUESTION_ROWS).get(q, q)
            if c["difference"] is None:
                continue
            item = f"{label} ({metric}): ResNet - VGG = {c['difference']:+.3f}"
            (sup if c["finding"] else nots).append(item)
        wa = f["aligned_within_vs_across"]
        if wa["within"]["n"] and wa["across"]["n"]:
            item = (
                f"paths of different families further apart than seeds of one family ({metric}): "
                f"{wa['across']['mean']:.3f} vs {wa['within']['mean']:.3f}"
            )
            (sup if wa["finding"] else nots).append(item)
    lines = ["Differences larger than the seed-to-seed spread (findings):", ""]
    lines += [f"- {x}" for x in sup] or ["- none"]
    lines += ["", "Differences within the seed spread, or not assessable with one seed (not findings):", ""]
    lines += [f"- {x}" for x in nots] or ["- none"]
    return lines + [""]


def write_report(res: Mapping[str, Any], out_dir: Path, figures: Mapping[str, list[str]]) -> Path:
    def rel(p):
        return os.path.relpath(p, out_dir)

    def png(files):
        return [f for f in files if f.endswith(".png")]

    o = res["options"]
    t = o["training"]
    fnd = res["findings"]
    lines = [
        "# Networks as paths through representation space",
        "",
        f"Generated {res['created']} by `python -m experiments.paths --preset {o.get('preset')}`. "
        "All numbers are also in `results.json`; the findings are computed by `experiments/paths/findings.py`.",
        "",
        "## Setup",
        "",
        f"- Networks: {', '.join(f'`{a}`' for a in res['archs'])} (name = architecture and training seed); "
        f"trained on {res['data']['train']} ({_fmt(res['data']['n_train'])} training images, {_recipe(t)}).",
        f"- Probe sets: the final-checkpoint geometry uses {res['probe']['n']} test images "
        f"({o['probe_per_class']} per class, hash `{res['probe']['hash']}`), the geometry over training the "
        f"first {res['trajectory_probe']['n']} of them (hash `{res['trajectory_probe']['hash']}`), from "
        f"{res['probe']['source']}. Every layer's representation of these images (from the input pixels to "
        "the logits) is a point; the network is the path through them.",
        "- Target: the one-hot label matrix of the probe set, as a point of the same space.",
        "- Metrics: "
        + "; ".join(f"`{k}` = {v['description']} ({v['units']})" for k, v in res["metrics"].items())
        + ". Conventions (centring, normalisation, the alpha of the shape metrics, arccos of CKA): "
        "`docs/conventions.md`.",
        f"- Geometry computed in {o['precision']}. Straightness = d(input, target) / path length "
        "(1 for a path that runs straight to the target). Turning angle at a layer = pi - the angle between "
        "the geodesics to the previous and next layer (0 = straight on). Position of a layer p = "
        "d(x, p) / (d(x, p) + d(p, y)) (0 at the input x, 1 at the target y): two distances, well "
        "conditioned. Projection t = fraction along the input->target geodesic of the point nearest the "
        "layer: ill conditioned where the residual is flat, so every t comes with the interval of t whose "
        f"residual lies within {o.get('interval_tol', 1e-3):g} (metric units) of the minimum.",
        f"- Findings: {fnd['criterion']}.",
        "",
        "## Accuracy",
        "",
        "| network | test accuracy (plain) | test accuracy (TTA) | final probe accuracy (n = "
        f"{res['probe']['n']}) | layers analysed | checkpoints |",
        "|---|---|---|---|---|---|",
    ]
    for name, a in res["archs"].items():
        lines.append(
            f"| `{name}` | {_fmt(a.get('final_test_acc'), 4)} | {_fmt(a.get('final_test_acc_tta'), 4)} | "
            f"{_fmt(a.get('final_probe_accuracy'))} | {len(a['layers'])} | {len(a['steps'])} "
            f"(steps {a['steps'][0]}..{a['steps'][-1]}) |"
        )
    lines.append("")
    for fam, acc in fnd["accuracy"].items():
        lines.append(
            f"- {fam}: plain {_ms(acc['plain'], 2, 100)} %, TTA {_ms(acc['tta'], 2, 100)} % "
            "(mean +- sd [min, max] over seeds)"
        )
    if "accuracy" in figures:
        lines += ["", f"![accuracy]({rel(png(figures['accuracy'])[0])})", ""]
    for metric, m in res["metrics"].items():
        u = m["units"]
        lines += ["", f"## Metric `{metric}`: {m['description']}", ""]
        lines += _question_lines(res, metric, m)
        lines += [
            f"Final checkpoint of each network (distances in {u}; t with its interval):",
            "",
            "| network | path length | d(input, target) | straightness | d(logits, target) | "
            "position of logits | t of logits [interval] | mean turning angle (rad) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, pa in m["per_arch"].items():
            f = pa["final"]
            pn = fnd["metrics"][metric]["per_network"][name]
            iv = pn.get("last_t_interval")
            ivs = f" [{_fmt(iv[0], 2)}, {_fmt(iv[1], 2)}]" if iv else ""
            lines.append(
                f"| `{name}` | {_fmt(f['length'])} | {_fmt(f['direct'])} | {_fmt(f['straightness'])} | "
                f"{_fmt(f['dist_to_target'][-1])} | {_fmt(pn['last_position'])} | "
                f"{_fmt(f['proj_t'][-1])}{ivs} | {_fmt(pn['mean_turning'])} |"
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
        names = {
            "questions": "questions 1 and 2",
            "paths_mds": "paths (MDS)",
            "paths_spherical": "paths (spherical MDS)",
            "distances": "distance matrix",
            "depth_profiles": "depth profiles",
            "training": "over training",
        }
        for fl in png(figures.get(metric, [])):
            stem = Path(fl).stem
            kind = next((v for k, v in names.items() if stem.startswith(k)), stem)
            lines += [f"![{metric}: {kind}]({rel(fl)})", ""]
        lines += [
            "PDF versions: "
            + ", ".join(f"[{Path(x).name}]({rel(x)})" for x in figures.get(metric, []) if x.endswith(".pdf")),
            "",
        ]
    lines += ["## What the data support", ""] + _support_lines(res)
    n_seeds = max((len(v) for v in fnd["families"].values()), default=0)
    lines += [
        "## What this report cannot say",
        "",
        "- The paper (Lange et al., arXiv:2206.10999) is quoted from its abstract only: \"layers reformat "
        "information to reduce the distance to the desired outputs\", and ResNet and VGG paths on CIFAR-10 "
        "are visualised and compared. Question 1 tests the first statement on these networks; nothing here "
        "checks the paper's figures or numbers.",
        f"- {n_seeds} seed(s) a family: a difference within the seed spread may still be real, and one "
        "outside it may not survive more seeds. No significance test is made.",
        f"- One probe set of {res['probe']['n']} test images (and {res['trajectory_probe']['n']} over "
        "training): the geometry of other inputs, and its sampling error, are not measured.",
        "- The networks are the quick recipe's (a few epochs, half-width airbench networks) on the JPEG copy "
        "of CIFAR-10, whose test accuracy is a few points below that of the original images; longer-trained, "
        "deeper or wider networks may move differently.",
        "- Projection fractions t are reported with their intervals; where an interval is wide (or clipped "
        "at the searched range), t is not determined and only the position measure is used.",
        "",
    ]
    timing = res["timing"]
    lines += [
        "## Timing",
        "",
        ", ".join(f"{k}: {v:.1f} s" for k, v in timing.items() if isinstance(v, (int, float))),
        "",
        "Training time of each network (its own process; `wall_time_s` of its run): "
        + ", ".join(
            f"`{n}` {a['run']['wall_time_s'] / 60:.1f} min"
            for n, a in res["archs"].items()
            if a.get("run", {}).get("wall_time_s")
        )
        + ".",
        "",
        f"Cache: {res['cache']['captures']} captures, {res['cache']['cache_hits']} reused from "
        f"`{res['cache']['dir']}`.",
        "",
    ]
    path = out_dir / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path
