"""The linear probe given the same dihedral views as the default recipe (BENCHMARKS.md, issue 11).

Why: the recipe's gain over the plain probe could come from the views alone. This probe trains a
logistic regression on the pooled vectors of all 8 views (C from {0.03, 0.1, 1} on val, with the
views' probabilities averaged at evaluation), refits on train + val and scores test with the same
averaging; the plain probe (`skyfuse bench`'s `probe-image+text`) is printed beside it.

Example:
  OMP_NUM_THREADS=1 python bench/probe_views.py aid-masked --protocol aid-20 --seeds 0,1,2
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # the experiments' data and captions


def main(argv: list[str] | None = None) -> int:
    args = A.experiment_parser(__doc__).parse_args(argv)

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from skyfuse.data.splits import make_split

    loaded = A.load_experiment(args.experiment, args.work, views=8)
    if loaded is None:
        return 0
    folder, _, f = loaded
    img = np.stack([p.numpy() for p in f.image_views.pooled])  # (V, M, D)
    txt = f.text_pooled.numpy()
    index = {r: i for i, r in enumerate(f.rels)}

    def x(rows: np.ndarray, v: int) -> np.ndarray:
        return np.concatenate([img[v][rows], txt[rows]], axis=1)

    out: dict[str, list[float]] = {"plain": [], "views": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        s = make_split(folder, protocol=args.protocol, val=0.1, seed=seed)
        cls = {c: i for i, c in enumerate(s.classes)}

        def part(rels: list[str], cls: dict[str, int] = cls) -> tuple[np.ndarray, np.ndarray]:
            return (
                np.array([index[r] for r in rels]),
                np.array([cls[r.split("/", 1)[0]] for r in rels]),
            )

        (tr, ytr), (va, yva), (te, yte) = part(s.train), part(s.val), part(s.test)
        for mode, views, grid in (
            ("plain", [0], (0.1, 1.0, 10.0)),
            ("views", range(8), (0.03, 0.1, 1.0)),
        ):

            def fit(rows: np.ndarray, y: np.ndarray, c: float, views=views):  # type: ignore[no-untyped-def]
                xx = np.concatenate([x(rows, v) for v in views])
                sc = StandardScaler().fit(xx)
                clf = LogisticRegression(C=c, max_iter=300).fit(
                    sc.transform(xx), np.tile(y, len(views))
                )
                return sc, clf

            def pred(m, rows: np.ndarray, views=views) -> np.ndarray:  # type: ignore[no-untyped-def]
                sc, clf = m
                return sum(clf.predict_proba(sc.transform(x(rows, v))) for v in views).argmax(1)

            best = max(grid, key=lambda c: (pred(fit(tr, ytr, c), va) == yva).mean())
            m = fit(np.concatenate([tr, va]), np.concatenate([ytr, yva]), best)
            acc = 100 * float((pred(m, te) == yte).mean())
            out[mode].append(acc)
            print(f"seed {seed} {mode}: test OA {acc:.2f} (C {best})", flush=True)
    for mode, accs in out.items():
        a = np.array(accs)
        std = a.std(ddof=1) if len(a) > 1 else 0.0
        print(f"probe-image+text ({mode}): {a.mean():.2f} ± {std:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
