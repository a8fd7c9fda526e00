"""The findings of the paths report (experiments/paths/findings.py) on hand-made results."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.paths import findings as F


def test_stats_and_the_finding_criterion():
    s = F.stats([0.2, None, 0.4, float("nan"), 0.3])
    assert s["n"] == 3 and s["min"] == 0.2 and s["max"] == 0.4
    assert s["mean"] == pytest.approx(0.3) and s["sd"] == pytest.approx(0.1)
    assert F.stats([0.5])["sd"] is None and F.stats([])["mean"] is None
    a, b, c = F.stats([1.0, 1.1, 1.2]), F.stats([0.5, 0.6, 0.85]), F.stats([0.5, 0.6, 1.05])
    assert F.compare(a, b) == dict(difference=pytest.approx(0.45), finding=True, assessable=True)
    assert F.compare(b, a)["finding"] and F.compare(b, a)["difference"] == pytest.approx(-0.45)
    assert not F.compare(a, c)["finding"]  # 1.05 lies inside [1.0, 1.2]: within the seed spread
    one = F.compare(F.stats([2.0]), F.stats([1.0]))  # one seed each: never a finding
    assert one["difference"] == 1.0 and not one["finding"] and not one["assessable"]


def _network(d_in, d_tgt, turning, straight, t, lo, hi):
    L = len(d_in)
    fin = dict(
        dist_to_input=d_in,
        dist_to_target=d_tgt,
        turning=turning,
        straightness=straight,
        length=float(np.sum(np.abs(np.diff(d_tgt)))) + 1.0,
        proj_t=[0.0] * (L - 1) + [t],
        position=[a / (a + b) for a, b in zip(d_in, d_tgt)],
    )
    training = dict(straightness=[0.1, straight], dist_to_target=[[2.0] * L, d_tgt])
    layers = [f"l{i}" for i in range(L)]
    return dict(
        final=fin,
        training=training,
        layers=layers,
        interval=dict(lo=[0.0] * (L - 1) + [lo], hi=[0.0] * (L - 1) + [hi]),
    )


def test_summarize_groups_seeds_by_family_and_compares_against_the_spread():
    archs, per = {}, {}
    for fam, base in (("resnet", 0.6), ("vgg", 0.3)):
        for seed in range(3):
            name = f"{fam}-s{seed}"
            archs[name] = dict(family=fam, final_test_acc=0.8 + 0.01 * seed, final_test_acc_tta=None)
            # resnet: every layer closer; vgg: layer 2 moves away
            d = [2.0, 1.5, 1.0, 0.5] if fam == "resnet" else [2.0, 1.5, 1.7, 0.5]
            per[name] = _network(
                [0.0, 0.5, 1.0, 1.5], d, [0.1, 1.0 + seed * 0.1], base + 0.01 * seed, 0.7, 0.2, 1.1
            )
    comparisons = {}
    names = list(archs)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            same = archs[names[i]]["family"] == archs[names[j]]["family"]
            comparisons[f"{names[i]} vs {names[j]}"] = dict(mean_aligned=0.1 if same else 0.4)
    res = dict(archs=archs, metrics=dict(m=dict(per_arch=per, comparisons=comparisons)))
    out = F.summarize(res)
    assert out["families"] == {"resnet": names[:3], "vgg": names[3:]}
    assert out["accuracy"]["vgg"]["plain"]["mean"] == pytest.approx(0.81)
    m = out["metrics"]["m"]
    assert m["per_network"]["resnet-s0"]["monotone"] and m["per_network"]["resnet-s0"]["closer_steps"] == 3
    assert m["per_network"]["vgg-s1"]["away_layers"] == ["l2"] and not m["per_network"]["vgg-s1"]["monotone"]
    assert m["families"]["resnet"]["monotone"] == 3 and m["families"]["vgg"]["monotone"] == 0
    assert m["per_network"]["vgg-s2"]["max_turning_layer"] == "l2"
    assert m["per_network"]["resnet-s0"]["last_t_width"] == pytest.approx(0.9)
    assert m["per_network"]["resnet-s0"]["last_position"] == pytest.approx(1.5 / 2.0)
    v = m["resnet_vs_vgg"]
    assert v["straightness"]["finding"] and v["straightness"]["difference"] == pytest.approx(0.3)
    assert not v["mean_turning"]["finding"]  # identical seeds in both families
    assert not v["last_dist_to_target"]["finding"] and v["last_dist_to_target"]["difference"] == 0.0
    wa = m["aligned_within_vs_across"]
    assert wa["within"]["n"] == 6 and wa["across"]["n"] == 9 and wa["finding"]
    assert m["aligned"]["resnet-vgg"]["mean"] == pytest.approx(0.4)
