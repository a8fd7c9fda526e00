"""The numbers behind the report's answers to the paper's three questions, computed from the results dict.

For every metric, with the networks grouped by family (ResNet, VGG) over their training seeds:

1. *Does each layer move the representation closer to the target?* Per network, the distance to the
   target at every layer, how many layer-to-layer steps reduce it, and whether all do (monotone).
2. *How straight are the paths, and where do they turn?* Straightness, length, turning angles (and the
   layer of the largest turn), the position of the last layer (well-conditioned,
   :attr:`geopath.PathAnalysis.position`) and its projection
   fraction t with the interval of t that its residual cannot tell apart (ill-conditioned).
3. *How do the paths form over training, and how far apart are different models' paths?* Straightness and
   the last layer's distance to the target at initialisation and at the end, and the distance between
   final paths at matched relative depth, for pairs within a family (seed to seed) and across families.

A ResNet-vs-VGG difference is called a *finding* only when the two families' seed ranges do not overlap
(every seed of one family lies beyond every seed of the other): with three seeds a family, that is a
difference larger than the seed-to-seed spread of the same quantity. With one seed a family no difference
can be assessed, and none is called a finding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CRITERION", "stats", "compare", "summarize"]

CRITERION = (
    "a ResNet-vs-VGG difference is a finding only when the two families' seed ranges [min, max] do not "
    "overlap; with one seed per family no difference is assessed"
)


def stats(values: Sequence[float | None]) -> dict[str, Any]:
    """``{n, mean, sd, min, max, values}`` of the finite ``values`` (sd: sample sd, None for n < 2)."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return dict(n=0, mean=None, sd=None, min=None, max=None, values=[])
    a = np.asarray(v)
    return dict(
        n=len(v),
        mean=float(a.mean()),
        sd=float(a.std(ddof=1)) if len(v) > 1 else None,
        min=float(a.min()),
        max=float(a.max()),
        values=v,
    )


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``a.mean - b.mean`` and whether it is a finding (seed ranges of ``a`` and ``b`` disjoint, n >= 2 each)."""
    if not a["n"] or not b["n"]:
        return dict(difference=None, finding=False, assessable=False)
    assessable = a["n"] >= 2 and b["n"] >= 2
    disjoint = a["max"] < b["min"] or b["max"] < a["min"]
    return dict(
        difference=a["mean"] - b["mean"], finding=bool(assessable and disjoint), assessable=assessable
    )


def _families(res: Mapping[str, Any]) -> dict[str, list[str]]:
    fams: dict[str, list[str]] = {}
    for name, a in res["archs"].items():
        fams.setdefault(a.get("family", name), []).append(name)
    return fams


def _per_network(fin: Mapping[str, Any], interval: Mapping[str, Any] | None, layers: list[str]) -> dict:
    d = [float(x) for x in fin["dist_to_target"]]
    steps_closer = [d[i + 1] < d[i] for i in range(len(d) - 1)]
    turning = [x if x is not None else float("nan") for x in (fin["turning"] or [])]
    pos = fin["position"]  # geopath.PathAnalysis.position: d(x, p) / (d(x, p) + d(p, y))
    out = dict(
        dist_to_target=d,
        closer_steps=int(sum(steps_closer)),
        steps=len(steps_closer),
        monotone=bool(all(steps_closer)),
        away_layers=[layers[i + 1] for i, c in enumerate(steps_closer) if not c],
        straightness=fin["straightness"],
        length=fin["length"],
        mean_turning=float(np.nanmean(turning)) if turning else None,
        max_turning_layer=layers[1 + int(np.nanargmax(turning))] if turning else None,
        max_turning=float(np.nanmax(turning)) if turning else None,
        last_dist_to_target=d[-1],
        last_position=pos[-1],
        position=pos,
        last_t=fin["proj_t"][-1],
    )
    if interval is not None:
        lo, hi = interval["lo"], interval["hi"]
        out["t_interval"] = [[a, b] for a, b in zip(lo, hi)]
        out["last_t_interval"] = [lo[-1], hi[-1]]
        out["last_t_width"] = None if lo[-1] is None or hi[-1] is None else hi[-1] - lo[-1]
    return out


def _metric_findings(m: Mapping[str, Any], res: Mapping[str, Any], fams: dict[str, list[str]]) -> dict:
    per = {}
    for name, pa in m["per_arch"].items():
        per[name] = _per_network(pa["final"], pa.get("interval"), pa["layers"])
        tr = pa["training"]
        per[name]["straightness_init"] = tr["straightness"][0]
        per[name]["last_dist_to_target_init"] = tr["dist_to_target"][0][-1]
        per[name]["straightness_traj_final"] = tr["straightness"][-1]
        per[name]["last_dist_to_target_traj_final"] = tr["dist_to_target"][-1][-1]
    quantities = (
        "straightness",
        "length",
        "mean_turning",
        "last_dist_to_target",
        "last_position",
        "last_t",
        "last_t_width",
        "closer_steps",
        "straightness_init",
        "straightness_traj_final",
        "last_dist_to_target_init",
        "last_dist_to_target_traj_final",
    )
    fam_stats = {
        f: {q: stats([per[n].get(q) for n in names if n in per]) for q in quantities}
        for f, names in fams.items()
    }
    fam_stats = {
        f: dict(s, monotone=sum(per[n]["monotone"] for n in fams[f] if n in per), networks=len(fams[f]))
        for f, s in fam_stats.items()
    }
    out: dict[str, Any] = dict(per_network=per, families=fam_stats)
    if {"resnet", "vgg"} <= set(fams):
        out["resnet_vs_vgg"] = {
            q: compare(fam_stats["resnet"][q], fam_stats["vgg"][q]) for q in quantities if q != "closer_steps"
        }
    # Distances between final paths at matched relative depth: within a family (seed to seed) and across.
    family_of = {n: res["archs"][n].get("family", n) for n in res["archs"]}
    pairs: dict[str, list[float]] = {}
    for key, c in m.get("comparisons", {}).items():
        a, b = key.split(" vs ")
        fa, fb = sorted((family_of[a], family_of[b]))
        pairs.setdefault(f"{fa}-{fb}", []).append(c["mean_aligned"])
    out["aligned"] = {k: stats(v) for k, v in pairs.items()}
    within = [v for k, v in pairs.items() if len(set(k.split("-"))) == 1]
    across = [v for k, v in pairs.items() if len(set(k.split("-"))) == 2]
    w, x = stats(list(itertools.chain(*within))), stats(list(itertools.chain(*across)))
    out["aligned_within_vs_across"] = dict(within=w, across=x, **compare(x, w))
    return out


def summarize(res: Mapping[str, Any]) -> dict[str, Any]:
    """The findings of every metric (see the module docstring) plus the test accuracy of each family."""
    fams = _families(res)
    return dict(
        criterion=CRITERION,
        families=fams,
        accuracy={
            f: dict(
                plain=stats([res["archs"][n].get("final_test_acc") for n in names]),
                tta=stats([res["archs"][n].get("final_test_acc_tta") for n in names]),
            )
            for f, names in fams.items()
        },
        metrics={metric: _metric_findings(m, res, fams) for metric, m in res["metrics"].items()},
    )
