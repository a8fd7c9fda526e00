"""Figures for paths of representations.

matplotlib is imported lazily inside each function, so ``import geopath``
works without it (install the ``plot`` extra to use this module). Figures are
built with ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI
backend needed); every function returns the figure and accepts an existing
``ax`` where it draws a single panel.

Functions:

* :func:`plot_paths_2d` -- paths in an MDS embedding, arrows from layer to
  layer, target marked.
* :func:`plot_distance_matrix` -- heat map of a distance matrix.
* :func:`plot_depth_profiles` -- distance to target, progress toward the
  target, distance off the input->target geodesic and turning angles against
  depth.
* :func:`plot_training` -- straightness, length and final distance to target
  against training step.
* :func:`save_figure` -- write PNG and PDF.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "plot_paths_2d",
    "plot_distance_matrix",
    "plot_depth_profiles",
    "plot_training",
    "save_figure",
]


def _mpl():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "geopath.plotting needs matplotlib; install it with `pip install geopath[plot]`"
        ) from e
    return matplotlib, Figure


def _colors(n: int):
    matplotlib, _ = _mpl()
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _unit_suffix(units: str | None) -> str:
    return f" ({units})" if units else ""


def _field(a: Any, name: str) -> np.ndarray:
    if isinstance(a, Mapping):
        return np.asarray(a[name])
    return np.asarray(getattr(a, name))


def plot_paths_2d(
    coords_by_model: Mapping[str, Any],
    *,
    target=None,
    ax=None,
    title: str = "Paths through representation space (MDS embedding)",
    units: str | None = "radians",
    layer_labels: Mapping[str, Sequence[str]] | None = None,
    figsize=(7.0, 6.0),
):
    """Plot each model's path, with an arrow from every layer to the next.

    Args:
      coords_by_model: ``{model name: [L, 2] coordinates}`` (e.g. rows of one
        joint :func:`geopath.classical_mds` embedding, so that the paths are
        comparable). ``[L, 3]`` coordinates are drawn on 3-D axes (only when
        ``ax`` is None or a 3-D axes).
      target: coordinates of the target point (``[2]`` or ``[3]``), drawn as a
        black star; optional.
      ax: matplotlib axes to draw into (a new figure if None).
      title: axes title.
      units: units of the embedded distances, shown on the axis labels
        (e.g. ``"radians"`` for angular metrics).
      layer_labels: optional ``{model name: [L] layer names}``; the first and
        last layer of each path are annotated with their names.

    Returns:
      The matplotlib figure.
    """
    _, Figure = _mpl()
    if not coords_by_model:
        raise ValueError("coords_by_model is empty")
    coords_by_model = {k: np.asarray(v, dtype=float) for k, v in coords_by_model.items()}
    dims = {v.shape[1] if v.ndim == 2 else -1 for v in coords_by_model.values()}
    if len(dims) != 1 or dims.pop() not in (2, 3):
        raise ValueError("every entry of coords_by_model must be an [L, 2] or [L, 3] array of the same width")
    dim = next(iter(coords_by_model.values())).shape[1]
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot(projection="3d" if dim == 3 else None)
    else:
        fig = ax.figure
    is3d = getattr(ax, "name", "") == "3d"
    if dim == 3 and not is3d:
        raise ValueError("[L, 3] coordinates need 3-D axes (pass ax=None)")

    from matplotlib.lines import Line2D

    colors = _colors(len(coords_by_model))
    handles = []
    for (name, C), col in zip(coords_by_model.items(), colors):
        L = C.shape[0]
        if is3d:
            ax.plot(C[:, 0], C[:, 1], C[:, 2], "-", color=col, lw=1.2, alpha=0.8)
            ax.scatter(C[:, 0], C[:, 1], C[:, 2], color=col, s=14)
            if L > 1:
                d = np.diff(C, axis=0)
                ax.quiver(
                    C[:-1, 0],
                    C[:-1, 1],
                    C[:-1, 2],
                    d[:, 0],
                    d[:, 1],
                    d[:, 2],
                    color=col,
                    arrow_length_ratio=0.25,
                    lw=1.0,
                )
            ax.scatter(*C[0], color=col, s=70, marker="o", edgecolors="k")
            ax.scatter(*C[-1], color=col, s=70, marker="s", edgecolors="k")
        else:
            ax.plot(C[:, 0], C[:, 1], "o", color=col, ms=3.5, alpha=0.9)
            for i in range(L - 1):
                ax.annotate(
                    "",
                    xy=(C[i + 1, 0], C[i + 1, 1]),
                    xytext=(C[i, 0], C[i, 1]),
                    arrowprops=dict(
                        arrowstyle="-|>", color=col, lw=1.3, shrinkA=2, shrinkB=2, mutation_scale=10
                    ),
                )
            ax.plot(C[0, 0], C[0, 1], "o", color=col, ms=9, mec="k", zorder=5)
            ax.plot(C[-1, 0], C[-1, 1], "s", color=col, ms=9, mec="k", zorder=5)
            if layer_labels is not None and name in layer_labels:
                names = list(layer_labels[name])
                for i in (0, L - 1):
                    if i < len(names):
                        ax.annotate(
                            names[i],
                            (C[i, 0], C[i, 1]),
                            textcoords="offset points",
                            xytext=(5, 5),
                            fontsize=7,
                            color=col,
                        )
        handles.append(Line2D([], [], color=col, marker="o", ms=4, lw=1.3, label=f"{name} ({L} layers)"))

    handles.append(Line2D([], [], color="gray", marker="o", ms=8, mec="k", lw=0, label="first layer (input)"))
    handles.append(Line2D([], [], color="gray", marker="s", ms=8, mec="k", lw=0, label="last layer (output)"))
    if target is not None:
        t = np.asarray(target, dtype=float).reshape(-1)
        if t.shape[0] != dim:
            raise ValueError(f"target must have {dim} coordinates; got {t.shape[0]}")
        if is3d:
            ax.scatter(*t, color="k", marker="*", s=250, zorder=6)
        else:
            ax.plot(t[0], t[1], "*", color="k", ms=18, zorder=6)
        handles.append(Line2D([], [], color="k", marker="*", ms=12, lw=0, label="target (labels)"))

    u = _unit_suffix(units)
    ax.set_xlabel(f"MDS dimension 1{u}")
    ax.set_ylabel(f"MDS dimension 2{u}")
    if is3d:
        ax.set_zlabel(f"MDS dimension 3{u}")
    else:
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(handles=handles, fontsize=8, loc="best")
    return fig


def plot_distance_matrix(
    D,
    labels: Sequence[str] | None = None,
    *,
    ax=None,
    title: str = "Pairwise distances between layer representations",
    units: str | None = "radians",
    boundaries: Sequence[int] | None = None,
    cmap: str = "viridis",
    max_ticks: int = 60,
    figsize=None,
):
    """Heat map of a distance matrix with labelled rows/columns.

    Args:
      D: ``[L, L]`` (or ``[L1, L2]``) distances.
      labels: row/column labels (layer names); for a rectangular ``D`` pass a
        pair ``(row_labels, col_labels)``.
      ax: axes to draw into (a new figure if None).
      title: axes title.
      units: distance units for the colour-bar label.
      boundaries: indices at which to draw separating lines (e.g. where one
        model's layers end and the next begin in a joint matrix).
      max_ticks: label at most this many ticks per axis (every k-th label).

    Returns:
      The matplotlib figure.
    """
    _, Figure = _mpl()
    D = np.asarray(D, dtype=float)
    if D.ndim != 2:
        raise ValueError(f"D must be 2-D; got shape {D.shape}")
    if labels is not None and len(labels) == 2 and not isinstance(labels[0], str):
        row_labels, col_labels = list(labels[0]), list(labels[1])
    elif labels is not None:
        row_labels = col_labels = list(labels)
    else:
        row_labels = col_labels = None
    if ax is None:
        side = min(4.0 + 0.12 * max(D.shape), 14.0)
        fig = Figure(figsize=figsize or (side + 1.2, side), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    im = ax.imshow(
        D, cmap=cmap, interpolation="nearest", aspect="equal" if D.shape[0] == D.shape[1] else "auto"
    )
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label(f"distance{_unit_suffix(units)}")

    def _ticks(n, labs, set_ticks, set_labels, **kw):
        if labs is None:
            return
        if len(labs) != n:
            raise ValueError(f"got {len(labs)} labels for an axis of length {n}")
        step = max(1, int(np.ceil(n / max_ticks)))
        idx = np.arange(0, n, step)
        set_ticks(idx)
        set_labels([labs[i] for i in idx], fontsize=max(4, min(8, int(400 / max(n, 1)))), **kw)

    _ticks(D.shape[1], col_labels, ax.set_xticks, ax.set_xticklabels, rotation=90)
    _ticks(D.shape[0], row_labels, ax.set_yticks, ax.set_yticklabels)
    if boundaries:
        for b in boundaries:
            ax.axhline(b - 0.5, color="w", lw=1.0)
            ax.axvline(b - 0.5, color="w", lw=1.0)
    ax.set_xlabel("layer")
    ax.set_ylabel("layer")
    ax.set_title(title)
    return fig


def _depth_axis(L: int, depth: str):
    if depth == "relative":
        return np.linspace(0.0, 1.0, L) if L > 1 else np.zeros(1)
    return np.arange(L, dtype=float)


def plot_depth_profiles(
    analysis_by_model: Mapping[str, Any],
    *,
    depth: str = "relative",
    units: str | None = "radians",
    title: str | None = "Layer-by-layer geometry of each network's path",
    figsize=(11.0, 8.0),
):
    """Per-layer quantities of :func:`geopath.analyze_path` against depth.

    Four panels: distance to the target; progress along the input -> target
    geodesic (``proj_t``: 0 = input, 1 = target); distance off that geodesic
    (``proj_residual``); turning angle at each interior layer.

    Args:
      analysis_by_model: ``{model name: PathAnalysis}`` (single path each; a
        mapping with the same field names also works).
      depth: ``"relative"`` (layer index / (L - 1), so networks of different
        depth line up) or ``"index"`` (layer index).
      units: distance units (``"radians"`` for angular metrics).
      title: figure title.

    Returns:
      The matplotlib figure.
    """
    _, Figure = _mpl()
    if depth not in ("relative", "index"):
        raise ValueError(f'depth must be "relative" or "index"; got {depth!r}')
    if not analysis_by_model:
        raise ValueError("analysis_by_model is empty")
    fig = Figure(figsize=figsize, layout="constrained")
    axs = fig.subplots(2, 2)
    u = _unit_suffix(units)
    xlabel = "relative depth (layer index / (number of layers - 1))" if depth == "relative" else "layer index"
    colors = _colors(len(analysis_by_model))
    for (name, a), col in zip(analysis_by_model.items(), colors):
        dt = _field(a, "dist_to_target")
        if dt.ndim != 1:
            raise ValueError(
                f"{name}: expected a single path's analysis (1-D per-layer fields); got shape {dt.shape}"
            )
        L = dt.shape[0]
        x = _depth_axis(L, depth)
        kw = dict(color=col, marker="o", ms=3, lw=1.4, label=name)
        axs[0, 0].plot(x, dt, **kw)
        axs[0, 1].plot(x, _field(a, "proj_t"), **kw)
        axs[1, 0].plot(x, _field(a, "proj_residual"), **kw)
        turn = _field(a, "turning")
        if turn.size:
            axs[1, 1].plot(x[1:-1], turn, **kw)
    axs[0, 0].set_title("Distance from each layer to the target")
    axs[0, 0].set_ylabel(f"distance to target{u}")
    axs[0, 1].set_title("Progress along the input→target geodesic")
    axs[0, 1].set_ylabel("projection fraction t (0 = input, 1 = target)")
    axs[0, 1].axhline(0.0, color="gray", lw=0.8, ls="--")
    axs[0, 1].axhline(1.0, color="k", lw=0.8, ls="--")
    axs[1, 0].set_title("Distance off the input→target geodesic")
    axs[1, 0].set_ylabel(f"distance to geodesic{u}")
    axs[1, 1].set_title("Turning angle at each interior layer (0 = straight on)")
    axs[1, 1].set_ylabel("turning angle (radians)")
    axs[1, 1].set_ylim(bottom=0.0)
    for ax in axs.flat:
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    axs[0, 0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return fig


def plot_training(
    analyses_over_steps,
    steps,
    *,
    units: str | None = "radians",
    title: str | None = "Path geometry over training",
    figsize=(13.0, 4.2),
):
    """Straightness, length and final-layer distance to target vs training step.

    Args:
      analyses_over_steps: a :class:`geopath.PathAnalysis` stacked over
        checkpoints (fields ``[T, ...]``, as returned by
        :func:`geopath.analyze_checkpoints`), or ``{model name: such
        analysis}``.
      steps: ``[T]`` training steps, or ``{model name: [T] steps}``.
      units: distance units.
      title: figure title.

    The step axis is logarithmic; step 0 (initialisation) is shown through a
    linear region around 0 (matplotlib "symlog").

    Returns:
      The matplotlib figure.
    """
    _, Figure = _mpl()
    if (
        isinstance(analyses_over_steps, Mapping)
        and not hasattr(analyses_over_steps, "_fields")
        and "length" not in analyses_over_steps
    ):
        by_model = dict(analyses_over_steps)
    else:
        by_model = {"": analyses_over_steps}
    if not by_model:
        raise ValueError("analyses_over_steps is empty")
    fig = Figure(figsize=figsize, layout="constrained")
    axs = fig.subplots(1, 3)
    u = _unit_suffix(units)
    colors = _colors(len(by_model))
    all_steps = []
    for (name, a), col in zip(by_model.items(), colors):
        st = np.asarray(steps[name] if isinstance(steps, Mapping) else steps, dtype=float).reshape(-1)
        s = _field(a, "straightness").reshape(-1)
        if s.shape[0] != st.shape[0]:
            raise ValueError(f"{name or 'analysis'}: {s.shape[0]} checkpoints but {st.shape[0]} steps")
        order = np.argsort(st)
        st = st[order]
        all_steps.append(st)
        kw = dict(color=col, marker="o", ms=3.5, lw=1.4, label=name or None)
        axs[0].plot(st, s[order], **kw)
        axs[1].plot(st, _field(a, "length").reshape(-1)[order], **kw)
        dt = _field(a, "dist_to_target")
        axs[2].plot(st, dt[:, -1][order], **kw)
    pos = np.concatenate(all_steps)
    pos = pos[pos > 0]
    linthresh = float(pos.min()) if pos.size else 1.0
    for ax in axs:
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_xlabel("training step (log scale; 0 = initialisation)")
        ax.grid(True, alpha=0.3, which="both")
    axs[0].set_title("Straightness = d(input, target) / path length")
    axs[0].set_ylabel("straightness (dimensionless)")
    axs[1].set_title("Path length (sum of layer-to-layer distances)")
    axs[1].set_ylabel(f"path length{u}")
    axs[2].set_title("Distance from the last layer to the target")
    axs[2].set_ylabel(f"distance to target{u}")
    if any(by_model.keys()):
        axs[0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, path_without_ext: str | os.PathLike, *, dpi: int = 150) -> tuple[str, str]:
    """Write ``fig`` as ``<path>.png`` and ``<path>.pdf`` (parent folders created).

    A trailing ``.png`` / ``.pdf`` in ``path_without_ext`` is ignored.

    Returns:
      ``(png_path, pdf_path)``.
    """
    base = os.fspath(path_without_ext)
    root, ext = os.path.splitext(base)
    if ext.lower() in (".png", ".pdf"):
        base = root
    parent = os.path.dirname(base)
    if parent:
        os.makedirs(parent, exist_ok=True)
    png, pdf = base + ".png", base + ".pdf"
    fig.savefig(png, dpi=dpi)
    fig.savefig(pdf)
    return png, pdf
