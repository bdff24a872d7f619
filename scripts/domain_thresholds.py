"""Do a detector's thresholds transfer to another domain, and what helps when they do not?

Touche23-ValueEval's labelled validation split holds three sources (A: IBM-ArgQ, 1526 arguments;
E: Conference on the Future of Europe, 280; D: groupdiscussionideas.com, 90) whose base rates
differ (Universalism: nature is 3% of A and 27% of E). Each source stands in for "another
domain": the detector's thresholds were chosen on its dev slice of training (mostly A), and this
measures, per source, the official F1 of

- label-free choices: dev's per-category thresholds (the detector's own), dev's single global
  threshold, Platt-calibrated scores with thresholds chosen on calibrated dev, EM prior adaptation
  of those calibrated scores (Saerens et al. 2002) on the source's own unlabelled scores, and
  thresholds that give each category the positive rate it had on dev;
- re-choosing on k labelled arguments of the source (``thresholds.retune``'s choice without its
  guard, and with it: what ``valuedetect retune`` does), scored on the source's other arguments,
  over 20 random samples.

Nothing here is chosen on the arguments it is scored on. Writes a JSON file and prints a table.

    python scripts/domain_thresholds.py --output docs/results/domain-thresholds.json   # ~1 min
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

import valuedetect as vd
from valuedetect.data import load_split
from valuedetect.metrics import official_f1
from valuedetect.protocol import make_splits
from valuedetect.thresholds import _fit, best_global, retune, tune

SOURCES = {"A": "IBM-ArgQ", "E": "Conference on the Future of Europe", "D": "groupdiscussionideas.com"}


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def f1(p: np.ndarray, y: np.ndarray, thresholds: np.ndarray | float) -> float:
    return official_f1(y, (p >= np.asarray(thresholds)).astype(np.int8))


def em_priors(q: np.ndarray, prior: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Posteriors adapted to the target's priors, estimated from its unlabelled posteriors by EM."""
    target = q.mean(0)
    adapted = q
    for _ in range(iterations):
        up, down = target / prior, (1 - target) / (1 - prior)
        adapted = q * up / (q * up + (1 - q) * down)
        target = np.clip(adapted.mean(0), 1e-4, 1 - 1e-4)
    return adapted


def label_free(dev_p: np.ndarray, dev_y: np.ndarray, own: np.ndarray, p: np.ndarray, y: np.ndarray) -> dict:
    g, _ = best_global(dev_p, dev_y)
    platt = [LogisticRegression(C=1e4).fit(logit(dev_p[:, [c]]), dev_y[:, c]) for c in range(dev_p.shape[1])]

    def calibrate(s: np.ndarray) -> np.ndarray:
        return np.stack([m.predict_proba(logit(s[:, [c]]))[:, 1] for c, m in enumerate(platt)], 1)

    calibrated_thresholds = np.asarray(tune(calibrate(dev_p), dev_y, mode="per_category").values)
    rates = (dev_p >= own).mean(0)
    rate_match = np.array([np.quantile(p[:, c], 1 - rates[c]) for c in range(p.shape[1])])
    q = calibrate(p)
    return {
        "dev per-category (the detector's own)": f1(p, y, own),
        "dev global": f1(p, y, g),
        "Platt-calibrated, thresholds on calibrated dev": f1(q, y, calibrated_thresholds),
        "EM prior adaptation": f1(em_priors(q, dev_y.mean(0)), y, calibrated_thresholds),
        "dev's positive rate per category": f1(p, y, rate_match),
    }


def with_labels(own: np.ndarray, p: np.ndarray, y: np.ndarray, k: int, repeats: int) -> dict:
    rows: dict[str, list[float]] = {"own": [], "re-chosen": [], "re-chosen, guarded (valuedetect retune)": []}
    kept = 0
    from valuedetect.thresholds import Thresholds

    current = Thresholds(values=list(own), mode="per_category", global_value=float(np.median(own)))
    for seed in range(repeats):
        order = np.random.default_rng(seed).permutation(len(y))
        sample, rest = order[:k], order[k:]
        rows["own"].append(f1(p[rest], y[rest], own))
        _, per_category = _fit(p[sample], y[sample], 0.5)
        rows["re-chosen"].append(f1(p[rest], y[rest], per_category))
        chosen = retune(p[sample], y[sample], current, seed=seed)
        kept += chosen.mode == "retuned"
        rows["re-chosen, guarded (valuedetect retune)"].append(f1(p[rest], y[rest], np.asarray(chosen.values)))
    out = {name: {"mean": float(np.mean(v)), "sd": float(np.std(v)),
                  "gain_mean": float(np.mean(np.subtract(v, rows["own"]))),
                  "gain_sd": float(np.std(np.subtract(v, rows["own"])))} for name, v in rows.items()}
    out["guard kept the re-chosen thresholds"] = f"{kept} of {repeats}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="detector folder or shipped name (default: shipped)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("docs/results/domain-thresholds.json"))
    args = parser.parse_args()
    start, cpu = time.time(), time.process_time()
    detector = vd.load(args.model)
    train, validation = load_split("training"), load_split("validation")
    splits = make_splits(train, validation)
    dev_p = detector.predict_proba(splits.dev.arguments).to_numpy()
    val_p = detector.predict_proba(validation.arguments).to_numpy()
    dev_y, val_y = splits.dev.labels, validation.labels
    own = np.asarray(detector.thresholds.to_numpy())
    source = np.array([a.id[0] for a in validation.arguments])
    results: dict = {"detector": str(detector.folder), "dev": splits.dev.name, "scored": "validation, per source",
                     "sources": {}}
    for s, name in SOURCES.items():
        m = source == s
        p, y = val_p[m], val_y[m]
        entry = {"name": name, "arguments": int(m.sum()),
                 "base_rate_gap_to_dev": float(np.abs(y.mean(0) - dev_y.mean(0)).mean()),
                 "label_free": label_free(dev_p, dev_y, own, p, y), "with_labels": {}}
        for k in (25, 50, 100, 200):
            if k <= len(y) - 30:
                entry["with_labels"][str(k)] = with_labels(own, p, y, k, args.repeats)
        results["sources"][s] = entry
    results["cost"] = {"wall_seconds": round(time.time() - start, 1),
                       "cpu_seconds": round(time.process_time() - cpu, 1), "cores": 2}
    results["command"] = "python scripts/domain_thresholds.py"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    for s, entry in results["sources"].items():
        print(f"{s} ({entry['name']}, {entry['arguments']} arguments; mean |base-rate gap| to dev "
              f"{entry['base_rate_gap_to_dev']:.3f})")
        for name, value in entry["label_free"].items():
            print(f"  {name:48s} {value:.4f}")
        for k, rows in entry["with_labels"].items():
            cells = [f"{n}: {r['gain_mean']:+.4f} ({r['gain_sd']:.3f})" for n, r in rows.items()
                     if isinstance(r, dict) and n != "own"]
            print(f"  k={k:>3} own {rows['own']['mean']:.4f}; gains " + "; ".join(cells)
                  + f"; guard kept {rows['guard kept the re-chosen thresholds']}")
    print(f"wrote {args.output}: {results['cost']}")


if __name__ == "__main__":
    main()
