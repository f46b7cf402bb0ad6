"""Train the vessel detector on generated tiles and save ``model.npz``.

    python apps/eo-filter/train.py [--out apps/eo-filter/model.npz]

Training tiles come from scene stream ``--seed`` (default 1), held-out tiles from a
different stream (``--seed + 1000``), so no held-out tile was seen in training. The MLP
(10 features → 16 tanh units → 1 logistic output) is fitted by full-batch Adam on
cross-entropy with a fixed initialisation seed: the same command gives the same weights.
Held-out accuracy, precision and recall are printed and stored in the model file.
Takes a few seconds on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detector import DEFAULT_MODEL, Detector, features  # noqa: E402
from tiles import make_dataset  # noqa: E402


def fit(
    feats: np.ndarray, labels: np.ndarray, *, hidden: int = 16, steps: int = 1500, seed: int = 0
) -> Detector:
    """Fit the MLP (full-batch Adam, L2 0.001). Deterministic for a given input."""
    rng = np.random.default_rng(seed)
    mean = feats.mean(axis=0)
    scale = feats.std(axis=0) + 1e-6
    x = (feats - mean) / scale
    y = labels.astype(float)
    n, d = x.shape
    params = {
        "w1": rng.normal(0, 1 / np.sqrt(d), (d, hidden)),
        "b1": np.zeros(hidden),
        "w2": rng.normal(0, 1 / np.sqrt(hidden), (hidden, 1)),
        "b2": np.zeros(1),
    }
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    lr, b1, b2, l2 = 0.02, 0.9, 0.999, 1e-3
    for step in range(1, steps + 1):
        h = np.tanh(x @ params["w1"] + params["b1"])
        p = 1 / (1 + np.exp(-(h @ params["w2"] + params["b2"]).reshape(-1)))
        g_out = ((p - y) / n)[:, None]
        grads = {
            "w2": h.T @ g_out + l2 * params["w2"],
            "b2": g_out.sum(axis=0),
        }
        g_h = (g_out @ params["w2"].T) * (1 - h**2)
        grads["w1"] = x.T @ g_h + l2 * params["w1"]
        grads["b1"] = g_h.sum(axis=0)
        for k in params:
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
            mhat = m[k] / (1 - b1**step)
            vhat = v[k] / (1 - b2**step)
            params[k] -= lr * mhat / (np.sqrt(vhat) + 1e-8)
    return Detector(mean, scale, params["w1"], params["b1"], params["w2"], params["b2"])


def evaluate(det: Detector, feats: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, precision and recall of ``det`` at its threshold."""
    pred = det.score_features(feats) >= det.threshold
    truth = labels.astype(bool)
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    return {
        "accuracy": float((pred == truth).mean()),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "n": int(len(labels)),
    }


def train(seed: int = 1, n_train: int = 3000, n_test: int = 1000) -> tuple[Detector, dict]:
    xtr, ytr = make_dataset(seed, n_train)
    xte, yte = make_dataset(seed + 1000, n_test)
    ftr, fte = features(xtr), features(xte)
    det = fit(ftr, ytr)
    return det, {"train": evaluate(det, ftr, ytr), "held_out": evaluate(det, fte, yte)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--train", type=int, default=3000, help="training tiles")
    ap.add_argument("--test", type=int, default=1000, help="held-out tiles")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    det, scores = train(a.seed, a.train, a.test)
    det.save(a.out, held_out=json.dumps(scores["held_out"]), train_seed=a.seed)
    scores["train_wall_s"] = round(time.monotonic() - t0, 2)
    print(json.dumps(scores, indent=1))
    print(f"saved {a.out} ({a.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
