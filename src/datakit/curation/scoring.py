"""Which images look mislabelled: the pure kernel of `datakit suspects` (no files, no pandas).

Two kinds of evidence, both from the embedding vectors of a pretrained backbone:

- **out-of-fold probabilities of a linear probe**. Vectors are L2-normalised, centred and
  whitened on their top principal directions (`dims`), and a ridge classifier is fitted in
  closed form on k-1 folds and scores the held-out fold (`folds`). Folds are group-aware: the
  members of one duplicate group sit in one fold, so an image is never scored by a model that
  saw its own copy. Scores become probabilities by a softmax at `temperature`.
- **the labels of its nearest neighbours** (cosine, `neighbours`), members of its own
  duplicate group left out, weighted by similarity and lightly smoothed.

The two are averaged; on real grocery photos with planted wrong labels the average ranks
better than either alone (bench/suspects.py). `score = 1 - p(given label)`.

The noise rate per label comes from the calibrated confident joint (Northcutt et al.): a
class's threshold is the mean probability of that class over the images labelled with it; an
image is confidently of class k when p_k is at least k's threshold (the largest such k wins);
counts of (given, confident) are rescaled so each given label's row sums to its image count,
and the off-diagonal share is that label's estimated noise. `flagged` then takes, within each
label, as many of the highest-scoring images as that estimate says are wrong ("prune by noise
rate"), so the flagged set is about as large as the estimated noise, not a fixed top-N; of
those, an image is flagged only when another class beats its own label by `flag_margin` of
probability; the rest are `ambiguous`, not flagged (on the grocery photos with 4 % planted
wrong labels this lifts the flagged set's precision from ~0.74 to ~0.82 at ~0.01 less recall).

Reasons: `off_topic` when the image is far from everything (its neighbours' mean similarity is
below the `off_topic_quantile` of all images' and no class claims it), `likely_mislabel` when
another class is the confident one, `ambiguous` when the two most likely classes are within
`ambiguous_margin` of each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIKELY_MISLABEL = "likely_mislabel"
OFF_TOPIC = "off_topic"
AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class Settings:
    folds: int = 5
    neighbours: int = 10
    dims: int = 256
    ridge: float = 0.01
    temperature: float = 10.0
    off_topic_quantile: float = 0.005
    ambiguous_margin: float = 0.1
    flag_margin: float = 0.2
    seed: int = 0


@dataclass
class Scores:
    probs: np.ndarray  # (n, K) combined out-of-fold probabilities
    score: np.ndarray  # (n,) 1 - p(given label)
    suggested: np.ndarray  # (n,) class index most likely (the confident class when there is one)
    flagged: np.ndarray  # (n,) bool
    reason: list[str | None]  # per image, for flagged or ambiguous/off-topic images
    noise_by_label: np.ndarray  # (K,) estimated share of wrong labels per given label
    confident: np.ndarray  # (n,) the confident class, -1 when none


def _whiten(X: np.ndarray, dims: int) -> np.ndarray:
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    Xc = X - X.mean(0)
    d = min(dims, X.shape[1], max(1, X.shape[0] - 1))
    cov = (Xc.T @ Xc) / max(len(X), 1)
    ev, V = np.linalg.eigh(cov)
    V, ev = V[:, ::-1][:, :d], ev[::-1][:d]
    Z = Xc @ V / np.sqrt(np.maximum(ev, 1e-6))
    return np.hstack([Z, np.ones((len(Z), 1))]).astype(np.float64)


def group_folds(groups: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold per image, whole groups at a time, each label spread over the folds: groups are
    dealt round-robin per label (their first member's), largest first, from a seeded shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(groups), dtype=np.int64)
    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    sizes = np.bincount(inverse)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-sizes[order], kind="stable")]
    next_fold: dict[int, int] = {}
    load = np.zeros(k, dtype=np.int64)
    group_fold = np.empty(len(uniq), dtype=np.int64)
    for g in order:
        lab = int(labels[first[g]])
        f = next_fold.get(lab, int(rng.integers(k)))
        # prefer the label's next fold, but not one already far fuller than the lightest
        if load[f] > load.min() + sizes.max():
            f = int(np.argmin(load))
        group_fold[g] = f
        load[f] += sizes[g]
        next_fold[lab] = (f + 1) % k
    fold[:] = group_fold[inverse]
    return fold


def _softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(1, keepdims=True)


def probe_probs(Z: np.ndarray, y: np.ndarray, K: int, fold: np.ndarray, s: Settings) -> np.ndarray:
    """Out-of-fold probabilities of a closed-form ridge classifier on whitened vectors."""
    P = np.full((len(y), K), 1.0 / K)
    eye = np.eye(Z.shape[1])
    for f in np.unique(fold):
        te = fold == f
        tr = ~te
        if not tr.any():
            continue
        T = np.zeros((int(tr.sum()), K))
        T[np.arange(T.shape[0]), y[tr]] = 1.0
        A = Z[tr].T @ Z[tr] + s.ridge * tr.sum() * eye
        W = np.linalg.solve(A, Z[tr].T @ T)
        P[te] = _softmax((Z[te] @ W) * s.temperature)
    return P


def neighbour_probs(X: np.ndarray, y: np.ndarray, K: int, groups: np.ndarray, k: int,
                    block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(label distribution of each image's k nearest neighbours by cosine, members of its own
    group left out; the neighbours' mean similarity). Exact, in row blocks."""
    Xn = (X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    n = len(Xn)
    k = max(1, min(k, n - 1))
    P = np.zeros((n, K))
    mean_sim = np.zeros(n)
    codes = np.unique(groups, return_inverse=True)[1]
    for start in range(0, n, block):
        stop = min(n, start + block)
        S = Xn[start:stop] @ Xn.T
        same = codes[start:stop, None] == codes[None, :]
        S[same] = -2.0  # itself and its duplicates
        nb = np.argpartition(-S, k - 1, axis=1)[:, :k]
        w = np.take_along_axis(S, nb, 1)
        valid = w > -2.0
        wpos = np.where(valid, np.clip(w, 0.0, None), 0.0)
        rows = np.repeat(np.arange(stop - start), k)
        np.add.at(P[start:stop], (rows, y[nb].reshape(-1)), wpos.reshape(-1))
        mean_sim[start:stop] = np.where(valid, w, 0.0).sum(1) / np.maximum(valid.sum(1), 1)
    P += 0.01
    P /= P.sum(1, keepdims=True)
    return P, mean_sim


def confident_joint(P: np.ndarray, y: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """(confident class per image or -1, per-class thresholds)."""
    thr = np.ones(K)
    for j in range(K):
        m = y == j
        if m.any():
            thr[j] = P[m, j].mean()
    above = P >= thr[None, :]
    conf = np.where(above, P, -1.0).argmax(1)
    conf[~above.any(1)] = -1
    return conf, thr


def noise_rates(y: np.ndarray, conf: np.ndarray, K: int, subset: np.ndarray | None = None) -> np.ndarray:
    """Estimated share of wrong labels per given label (calibrated confident joint), over
    `subset` of the images when given (NaN for a label with no image there)."""
    m = conf >= 0 if subset is None else (conf >= 0) & subset
    C = np.zeros((K, K))
    np.add.at(C, (y[m], conf[m]), 1.0)
    counts = np.bincount(y if subset is None else y[subset], minlength=K).astype(float)
    rows = C.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        diag_share = np.where(rows > 0, np.diag(C) / np.maximum(rows, 1), 1.0)
    rate = 1.0 - diag_share
    rate[counts == 0] = np.nan
    return rate


def score(X: np.ndarray, y: np.ndarray, K: int, groups: np.ndarray, s: Settings = Settings()) -> Scores:
    """Score every image: `X` (n, d) vectors, `y` (n,) label indices in 0..K-1, `groups` (n,)
    duplicate-group codes (members share a fold and are not each other's neighbours)."""
    n = len(y)
    if n < 3 or K < 2:
        raise ValueError("label noise needs at least three images and two labels")
    fold = group_folds(groups, y, max(2, min(s.folds, n)), s.seed)
    # A few hundred images cannot fit 256 whitened directions: at most one per 5 images.
    probe = probe_probs(_whiten(X, min(s.dims, max(8, n // 5))), y, K, fold, s)
    near, mean_sim = neighbour_probs(X, y, K, groups, s.neighbours)
    P = (probe + near) / 2
    idx = np.arange(n)
    sc = 1.0 - P[idx, y]
    conf, _thr = confident_joint(P, y, K)
    noise = noise_rates(y, conf, K)
    flagged = np.zeros(n, dtype=bool)
    for j in range(K):
        members = np.flatnonzero(y == j)
        if not len(members) or np.isnan(noise[j]):
            continue
        q = int(round(noise[j] * len(members)))
        if q:
            flagged[members[np.argsort(-sc[members], kind="stable")[:q]]] = True
    top2 = np.argsort(-P, axis=1)[:, :2]
    suggested = np.where(conf >= 0, conf, top2[:, 0])
    far = mean_sim < np.quantile(mean_sim, s.off_topic_quantile)
    tie = (P[idx, top2[:, 0]] - P[idx, top2[:, 1]]) < s.ambiguous_margin
    reason: list[str | None] = []
    for i in range(n):
        if far[i] and conf[i] < 0 and sc[i] > 0.5:
            reason.append(OFF_TOPIC)  # far from every image and no class claims it
        elif flagged[i] and suggested[i] != y[i] and P[i, suggested[i]] - P[i, y[i]] > s.flag_margin:
            reason.append(LIKELY_MISLABEL)
        elif flagged[i] or (tie[i] and y[i] in top2[i]):
            reason.append(AMBIGUOUS)
        else:
            reason.append(None)
    # Flagged: wrong by the estimate and another class is the better answer, or off topic. An
    # image the estimate picks whose best class is still its own is `ambiguous`, not flagged.
    flagged = np.array([r in (LIKELY_MISLABEL, OFF_TOPIC) for r in reason])
    return Scores(probs=P, score=sc, suggested=suggested, flagged=flagged, reason=reason,
                  noise_by_label=noise, confident=conf)
