"""Plants value bugs one at a time and checks that the default run of the module's own test file catches each.

Issue 27's acceptance check, kept runnable: ``.venv/bin/python tests/planted_bugs.py [NAME ...]``. Every plant
is a one-line change to the library (the order of the pairwise scatter's values, a PGA scale, a penalty's
vertex or end, the weight-decay modes, the label smoothing, classical MDS's scale, the resampling fraction,
the "nearest" tie rule); it is made in a temporary copy of the tracked files, never in this checkout. The
script prints one line per plant and exits 1 if any plant passes its test file. It takes about 3 minutes on
2 cores; it is not part of the test suite.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Plant(NamedTuple):
    name: str
    path: str  # the library file changed
    old: str  # exactly one occurrence in that file
    new: str
    tests: str  # the test file that must fail


PLANTS = (
    Plant(
        "pairwise assembly: values scattered in reverse order",
        "geopath/_src/pairwise.py",
        "vals = jnp.tile(vals, pos.shape[0])",
        "vals = jnp.tile(vals[::-1], pos.shape[0])",
        "tests/geopath/test_pairwise.py",
    ),
    Plant(
        "PGA: explained-variance ratio off by 1%",
        "geopath/_src/pga.py",
        "ratio = lam / jnp.where(total > 0, total, 1.0)",
        "ratio = lam / jnp.where(total > 0, 1.01 * total, 1.0)",
        "tests/geopath/test_pga.py",
    ),
    Plant(
        "PGA: scores scaled by sqrt(m - 1) instead of sqrt(m)",
        "geopath/_src/pga.py",
        "scores = u * jnp.sqrt(lam * m)[None, :]",
        "scores = u * jnp.sqrt(lam * (m - 1))[None, :]",
        "tests/geopath/test_pga.py",
    ),
    Plant(
        "penalty: turning drops the first vertex",
        "geopath/_src/regularize.py",
        "return jnp.sum(jnp.pi - angles)",
        "return jnp.sum(jnp.pi - angles[1:])",
        "tests/geopath/test_regularize.py",
    ),
    Plant(
        "penalty: excess measured to the last-but-one layer",
        "geopath/_src/regularize.py",
        "return length - space.distance(pts[0], pts[-1])",
        "return length - space.distance(pts[0], pts[-2])",
        "tests/geopath/test_regularize.py",
    ),
    Plant(
        "optimiser: weight-decay modes swapped",
        "models/train_state.py",
        'if cfg.weight_decay_mode == "l2":',
        'if cfg.weight_decay_mode == "decoupled":',
        "tests/models/test_train.py",
    ),
    Plant(
        "loss: half the label smoothing",
        "models/train_state.py",
        "spec.num_classes), spec.label_smoothing)",
        "spec.num_classes), spec.label_smoothing / 2)",
        "tests/models/test_train.py",
    ),
    Plant(
        "classical MDS: coordinates scaled by 1.001",
        "geopath/_src/embedding.py",
        "    coords = V * jnp.sqrt(jnp.maximum(w[:dim], 0.0))\n    return MDSResult",
        "    coords = 1.001 * V * jnp.sqrt(jnp.maximum(w[:dim], 0.0))\n    return MDSResult",
        "tests/geopath/test_embedding.py",
    ),
    Plant(
        "compare_paths: resampling fraction scaled by 0.9",
        "geopath/_src/paths.py",
        "    frac = pos - idx\n",
        "    frac = 0.9 * (pos - idx)\n",
        "tests/geopath/test_paths.py",
    ),
    Plant(
        'compare_paths: "nearest" ties round down',
        "geopath/_src/paths.py",
        "ib = np.floor(depth_np * (Lb - 1) + 0.5)",
        "ib = np.floor(depth_np * (Lb - 1) + 0.49)",
        "tests/geopath/test_paths.py",
    ),
)


CONTROL = "tests/geopath/test_pga.py"


def _pytest(work: Path, tests: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", tests]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True)


def _copy_tracked(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    for f in filter(None, files):
        src, dst = ROOT / f.decode(), dest / f.decode()
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())


def main(names: list[str]) -> int:
    missed = 0
    with tempfile.TemporaryDirectory(prefix="geopath-plants-") as tmp:
        work = Path(tmp) / "repo"
        _copy_tracked(work)
        (work.parent / "shared").symlink_to(ROOT.parent / "shared")  # the CIFAR-10 copy, as beside ROOT
        # control: the unchanged copy passes, so a failure below is the plant's
        if _pytest(work, CONTROL).returncode != 0:
            print(f"the unchanged copy fails {CONTROL}: fix that first")
            return 2
        for plant in PLANTS:
            if names and not any(n in plant.name for n in names):
                continue
            target = work / plant.path
            source = target.read_text()
            if source.count(plant.old) != 1:
                print(f"STALE   {plant.name}: the planted line is not in {plant.path} exactly once")
                missed += 1
                continue
            target.write_text(source.replace(plant.old, plant.new))
            try:
                proc = _pytest(work, plant.tests)
            finally:
                target.write_text(source)
            caught = proc.returncode == 1
            missed += not caught
            print(f"{'caught' if caught else 'MISSED'}  {plant.name} ({plant.tests})", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
