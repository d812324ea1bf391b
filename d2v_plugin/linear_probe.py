"""The linear probe both d2v-image-probe and d2v-text-probe report: frozen features,
standardised on train, scikit-learn's logistic regression, C chosen by valid accuracy."""
from typing import Sequence, Tuple

import numpy as np

Split = Tuple[np.ndarray, np.ndarray]  # (features (N, D), labels (N,))


def fit_linear_probe(train: Split, valid: Split, test: Split, c_grid: Sequence[float],
                     max_iter: int = 2000) -> Tuple[float, float, float]:
    """(C, valid accuracy, test accuracy); ties in valid accuracy keep the earlier C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train[0])
    xs = [scaler.transform(x) for x, _ in (train, valid, test)]
    best = None
    for c in c_grid:
        clf = LogisticRegression(C=c, max_iter=max_iter).fit(xs[0], train[1])
        valid_acc = float((clf.predict(xs[1]) == valid[1]).mean())
        if best is None or valid_acc > best[1]:
            best = (c, valid_acc, clf)
    c, valid_acc, clf = best
    return c, valid_acc, float((clf.predict(xs[2]) == test[1]).mean())
