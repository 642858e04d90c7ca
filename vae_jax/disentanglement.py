"""The five standard disentanglement metrics, as pure functions of a representation and its data.

Every metric takes
  representation_fn: observations [B, ...] -> codes [B, D] (numpy or JAX; e.g. a trained
    encoder's posterior mean, `disentangle_eval.posterior_mean_fn`);
  sample_factors: (key, n) -> int [n, F] factor indices, each factor drawn independently
    (`dsprites.sample_factors`);
  observe: int [n, F] factor indices -> observations [n, ...] (`dsprites.images_from_factors`);
  key: a JAX PRNG key; the same key gives the same number;
and returns a float (DCI: a dict). Every setting is a keyword whose default is
disentanglement_lib's (Locatello et al. 2019), so numbers follow its protocol; smaller sizes
are for tests and quick looks. All F factors the sampler returns are scored (for dSprites all
five, shape included, as disentanglement_lib does); a factor that takes a single value in a
sample has no entropy and is left out of MIG's average.

Chance levels differ: the beta-VAE and FactorVAE scores are classifier accuracies, so a
representation that knows nothing of the factors scores about 1 / F there, and about 0 on MIG,
DCI disentanglement/completeness and SAP.

References: Higgins et al. (2017) beta-VAE score; Kim & Mnih (2018) FactorVAE score; Chen et
al. (2018) MIG; Eastwood & Williams (2018) DCI; Kumar et al. (2018) SAP; Locatello et al.
(2019) disentanglement_lib, whose estimators and defaults these follow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

RepresentationFn = Callable[[Any], Any]
FactorSampler = Callable[[jax.Array, int], Any]
ObserveFn = Callable[[Any], Any]

DCI_REGRESSORS = ('gbt', 'lasso')


def represent(
    representation_fn: RepresentationFn,
    observe: ObserveFn,
    factors: np.ndarray,
    *,
    batch_size: int = 256,
) -> np.ndarray:
    """Codes of the observations of `factors`, rendered and encoded `batch_size` at a time.

    Args:
      representation_fn: observations [B, ...] -> [B, D].
      observe: factors [B, F] -> observations [B, ...].
      factors: int [N, F].
      batch_size: observations held at once (bounds memory).

    Returns:
      float64 [N, D].
    """
    factors = np.asarray(factors)
    out = []
    for start in range(0, len(factors), batch_size):
        codes = np.asarray(representation_fn(observe(factors[start : start + batch_size])))
        if codes.ndim != 2:
            raise ValueError(f'representation_fn must return [B, D] codes, got {codes.shape}.')
        out.append(codes.astype(np.float64))
    return np.concatenate(out)


def sample_representations(
    representation_fn, sample_factors, observe, key, n: int, *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(codes float64 [n, D], factors int64 [n, F]) of n factor draws."""
    factors = np.asarray(sample_factors(key, n), np.int64)
    return represent(representation_fn, observe, factors, batch_size=batch_size), factors


def _rng(key: jax.Array) -> np.random.Generator:
    """A numpy generator seeded from a JAX key (for sklearn's and numpy's own randomness)."""
    return np.random.default_rng(np.asarray(jax.random.bits(key, (4,), np.uint32)).tolist())


def beta_vae_score(
    representation_fn: RepresentationFn,
    sample_factors: FactorSampler,
    observe: ObserveFn,
    key: jax.Array,
    *,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
) -> float:
    """beta-VAE score: accuracy of a linear classifier that names the factor held fixed.

    Estimator (Higgins et al. 2017, as in disentanglement_lib): each point draws a factor k
    uniformly and `batch_size` pairs of factor draws that share factor k's value; its feature is
    the mean over the pairs of |code(x1) - code(x2)| [D]. A logistic regression
    (scikit-learn, default settings) is fitted on `num_train` points; the score is its accuracy
    on `num_eval` fresh points. Maximum 1; chance 1 / F.

    `representation_fn`, `sample_factors`, `observe` and `key` are as in the module docstring.

    Args:
      batch_size: pairs per point.
      num_train: points to fit the classifier.
      num_eval: points to score it.

    Returns:
      The eval accuracy, in [0, 1].

    References: Higgins et al. (2017), beta-VAE, ICLR; Locatello et al. (2019).
    """
    from sklearn import linear_model  # Imported here: sklearn takes ~2 s to import.

    train_key, eval_key = jax.random.split(key)
    x_train, y_train = _beta_vae_points(
        representation_fn, sample_factors, observe, train_key, num_train, batch_size
    )
    x_eval, y_eval = _beta_vae_points(
        representation_fn, sample_factors, observe, eval_key, num_eval, batch_size
    )
    model = linear_model.LogisticRegression(random_state=0).fit(x_train, y_train)
    return float(np.mean(model.predict(x_eval) == y_eval))


def _beta_vae_points(representation_fn, sample_factors, observe, key, num_points, batch_size):
    """Features [P, D] and fixed-factor labels [P] of the beta-VAE score."""
    features, labels = [], []
    chunk = max(1, 4096 // batch_size)  # points per call: ~8192 observations at once
    for i, start in enumerate(range(0, num_points, chunk)):
        points = min(chunk, num_points - start)
        k1, k2, k3 = jax.random.split(jax.random.fold_in(key, i), 3)
        first = np.asarray(sample_factors(k1, points * batch_size), np.int64)
        second = np.asarray(sample_factors(k2, points * batch_size), np.int64)
        num_factors = first.shape[1]
        fixed = np.asarray(jax.random.randint(k3, (points,), 0, num_factors))
        keep = np.repeat(fixed, batch_size)
        rows = np.arange(len(first))
        second[rows, keep] = first[rows, keep]
        both = represent(representation_fn, observe, np.concatenate([first, second]))
        diff = np.abs(both[: len(first)] - both[len(first) :])
        features.append(diff.reshape(points, batch_size, -1).mean(axis=1))
        labels.append(fixed)
    return np.concatenate(features), np.concatenate(labels)


def factor_vae_score(
    representation_fn: RepresentationFn,
    sample_factors: FactorSampler,
    observe: ObserveFn,
    key: jax.Array,
    *,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
) -> float:
    """FactorVAE score: majority-vote accuracy of naming the fixed factor by its quietest code.

    Estimator (Kim & Mnih 2018, as in disentanglement_lib): codes are divided by their standard
    deviation over `num_variance_estimate` draws; dimensions with zero variance (collapsed) are
    dropped. Each vote draws a factor k and `batch_size` draws sharing one value of k; the vote
    is (k, the dimension of least variance within the batch, ddof=1). A majority-vote classifier
    (dimension -> its most frequent factor) is fitted on `num_train` votes and scored on
    `num_eval` fresh ones. Maximum 1; chance about 1 / F; 0 when every dimension collapsed.

    `representation_fn`, `sample_factors`, `observe` and `key` are as in the module docstring.

    Args:
      batch_size: draws per vote.
      num_train: votes to fit the classifier.
      num_eval: votes to score it.
      num_variance_estimate: draws for each dimension's global variance.

    Returns:
      The eval accuracy, in [0, 1].

    References: Kim & Mnih (2018), Disentangling by Factorising, ICML; Locatello et al. (2019).
    """
    var_key, train_key, eval_key = jax.random.split(key, 3)
    codes, _ = sample_representations(
        representation_fn, sample_factors, observe, var_key, num_variance_estimate
    )
    global_var = np.var(codes, axis=0, ddof=1)
    active = global_var > 0
    if not active.any():
        return 0.0
    train_votes = _factor_vae_votes(
        representation_fn, sample_factors, observe, train_key, num_train, batch_size,
        global_var, active,
    )  # fmt: skip
    eval_votes = _factor_vae_votes(
        representation_fn, sample_factors, observe, eval_key, num_eval, batch_size,
        global_var, active,
    )  # fmt: skip
    classifier = np.argmax(train_votes, axis=0)  # [D]: each dimension's factor
    other = np.arange(train_votes.shape[1])
    return float(eval_votes[classifier, other].sum() / eval_votes.sum())


def _factor_vae_votes(
    representation_fn, sample_factors, observe, key, num_votes, batch_size, global_var, active
) -> np.ndarray:
    """Vote counts [F, D] of the FactorVAE score (inactive dimensions never win)."""
    votes = None
    chunk = max(1, 8192 // batch_size)
    for i, start in enumerate(range(0, num_votes, chunk)):
        points = min(chunk, num_votes - start)
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        factors = np.asarray(sample_factors(k1, points * batch_size), np.int64)
        num_factors = factors.shape[1]
        if votes is None:
            votes = np.zeros((num_factors, len(global_var)), np.int64)
        fixed = np.asarray(jax.random.randint(k2, (points,), 0, num_factors))
        factors = factors.reshape(points, batch_size, num_factors)
        factors[np.arange(points), :, fixed] = factors[np.arange(points), 0, fixed][:, None]
        codes = represent(representation_fn, observe, factors.reshape(-1, num_factors))
        local_var = np.var(codes.reshape(points, batch_size, -1), axis=1, ddof=1)
        ratio = np.where(active[None], local_var / np.where(active, global_var, 1)[None], np.inf)
        np.add.at(votes, (fixed, np.argmin(ratio, axis=1)), 1)
    return votes


def discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each code dimension into `num_bins` equal-width bins over its sample range.

    As disentanglement_lib's `_histogram_discretize`: bin edges from `np.histogram`, bin index
    by `np.digitize` on the left edges (so the maximum falls in the last bin).

    Args:
      codes: [N, D].
      num_bins: bins per dimension.

    Returns:
      int64 [N, D] bin indices in [1, num_bins].
    """
    codes = np.asarray(codes, np.float64)
    out = np.empty(codes.shape, np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two discrete samples: int [N], int [N] -> [].

    I(a; b) = sum_ij p_ij log(p_ij / (p_i p_j)) over the empirical joint (what scikit-learn's
    `mutual_info_score` computes); I(a; a) is a's entropy.
    """
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))


def mig_from_samples(codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20) -> float:
    """MIG of given codes [N, D] and factor indices [N, F] (see `mig`)."""
    binned = discretize(codes, num_bins)
    factors = np.asarray(factors)
    gaps = []
    for k in range(factors.shape[1]):
        entropy = mutual_information(factors[:, k], factors[:, k])
        if entropy == 0:
            continue  # a constant factor carries no information to gap over
        mi = np.sort(
            [mutual_information(binned[:, j], factors[:, k]) for j in range(binned.shape[1])]
        )
        second = mi[-2] if len(mi) > 1 else 0.0
        gaps.append((mi[-1] - second) / entropy)
    return float(np.mean(gaps)) if gaps else 0.0


def mig(
    representation_fn: RepresentationFn,
    sample_factors: FactorSampler,
    observe: ObserveFn,
    key: jax.Array,
    *,
    num_train: int = 10_000,
    num_bins: int = 20,
) -> float:
    """Mutual Information Gap, with the discretised-mean estimator.

    Estimator (disentanglement_lib's, not Chen et al.'s sampled-entropy one): each code dimension
    of `num_train` draws is cut into `num_bins` equal-width bins over its range; I(z_j; v_k) is
    the plug-in mutual information of bin and factor index. MIG = mean over factors of
    (largest - second largest I(z_j; v_k)) / H(v_k). Every factor with nonzero entropy in the
    sample is included (dSprites: all five, shape too). Maximum 1; the plug-in estimate is
    biased up by about (bins - 1)(values - 1) / (2N) nats per pair, so noise scores slightly
    above 0.

    `representation_fn`, `sample_factors`, `observe` and `key` are as in the module docstring.

    Args:
      num_train: draws.
      num_bins: histogram bins per code dimension.

    Returns:
      MIG in [0, 1].

    References: Chen et al. (2018), Isolating Sources of Disentanglement in VAEs, NeurIPS;
    Locatello et al. (2019).
    """
    codes, factors = sample_representations(
        representation_fn, sample_factors, observe, key, num_train
    )
    return mig_from_samples(codes, factors, num_bins=num_bins)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix [D, F] (R_ij: code i, factor j).

    Disentanglement: sum_i rho_i (1 - H_F(P_i.)), P_ij = R_ij / sum_j R_ij, entropy in base F,
    rho_i = sum_j R_ij / sum R. Completeness: sum_j rho_j (1 - H_D(P~_.j)), P~ the column
    normalisation, base D, rho_j = sum_i R_ij / sum R. Each is 1 for a permutation matrix.
    """
    importance = np.abs(np.asarray(importance, np.float64))
    total = importance.sum()
    if total == 0:
        return 0.0, 0.0

    def score(matrix):  # rows are the units scored; entropy over columns, in base #columns
        n = matrix.shape[1]
        if n == 1:
            return 1.0
        p = matrix / np.maximum(matrix.sum(1, keepdims=True), 1e-300)
        with np.errstate(divide='ignore', invalid='ignore'):
            entropy = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1) / np.log(n)
        weight = matrix.sum(1) / total
        return float(np.sum(weight * (1 - entropy)))

    return score(importance), score(importance.T)


def dci(
    representation_fn: RepresentationFn,
    sample_factors: FactorSampler,
    observe: ObserveFn,
    key: jax.Array,
    *,
    num_train: int = 10_000,
    num_test: int = 5_000,
    regressor: str = 'gbt',
) -> dict[str, Any]:
    """DCI: disentanglement, completeness and informativeness of a representation.

    Estimator: one predictor per factor from all D codes, fitted on `num_train` draws.
    regressor='gbt' (disentanglement_lib's): scikit-learn's GradientBoostingClassifier with its
    default settings; the importance R_ij is tree importance (`feature_importances_`);
    informativeness is the mean test accuracy over factors on `num_test` draws (chance about
    1 / values). It is slow: at the defaults, minutes per model on two CPU cores, most of it on
    the 40-value orientation. regressor='lasso' (Eastwood & Williams' own choice): a Lasso
    (alpha 0.01) on standardised codes predicting the standardised factor index; R_ij is |weight|;
    informativeness is the mean test R^2. Seconds, but it sees linear relations only.
    Disentanglement and completeness: `dci_from_importance`.

    `representation_fn`, `sample_factors`, `observe` and `key` are as in the module docstring.

    Args:
      num_train: draws to fit the predictors.
      num_test: draws to test them.
      regressor: 'gbt' | 'lasso'.

    Returns:
      A dict: 'disentanglement', 'completeness' and 'informativeness', floats in [0, 1], and
      'importance', float64 [D, F].

    Raises:
      ValueError: an unknown regressor.

    References: Eastwood & Williams (2018), A Framework for the Quantitative Evaluation of
    Disentangled Representations, ICLR; Locatello et al. (2019).
    """
    if regressor not in DCI_REGRESSORS:
        raise ValueError(f'dci: regressor={regressor!r}; allowed: {", ".join(DCI_REGRESSORS)}.')
    train_key, test_key = jax.random.split(key)
    x_train, y_train = sample_representations(
        representation_fn, sample_factors, observe, train_key, num_train
    )
    x_test, y_test = sample_representations(
        representation_fn, sample_factors, observe, test_key, num_test
    )
    importance, informativeness = dci_importance(x_train, y_train, x_test, y_test, regressor)
    disentanglement, completeness = dci_from_importance(importance)
    return {
        'disentanglement': disentanglement,
        'completeness': completeness,
        'informativeness': informativeness,
        'importance': importance,
    }


def dci_importance(x_train, y_train, x_test, y_test, regressor: str = 'gbt'):
    """(importance [D, F], informativeness) of codes x [N, D] for factors y [N, F] (see `dci`)."""
    from sklearn import ensemble, linear_model  # Imported here: sklearn takes ~2 s to import.

    num_codes, num_factors = x_train.shape[1], y_train.shape[1]
    importance = np.zeros((num_codes, num_factors))
    scores = []
    for k in range(num_factors):
        if regressor == 'gbt':
            model = ensemble.GradientBoostingClassifier(random_state=0)
            model.fit(x_train, y_train[:, k])
            importance[:, k] = np.abs(model.feature_importances_)
            scores.append(np.mean(model.predict(x_test) == y_test[:, k]))
        else:
            mean, std = x_train.mean(0), np.maximum(x_train.std(0), 1e-12)
            y_mean, y_std = y_train[:, k].mean(), max(y_train[:, k].std(), 1e-12)
            model = linear_model.Lasso(alpha=0.01)
            model.fit((x_train - mean) / std, (y_train[:, k] - y_mean) / y_std)
            importance[:, k] = np.abs(model.coef_)
            scores.append(model.score((x_test - mean) / std, (y_test[:, k] - y_mean) / y_std))
    return importance, float(np.clip(np.mean(scores), 0.0, 1.0))


def sap_from_samples(
    x_train, y_train, x_test, y_test, *, continuous_factors: bool = False
) -> float:
    """SAP of codes [N, D] and factors [N, F] (see `sap`)."""
    from sklearn import svm  # Imported here: sklearn takes ~2 s to import.

    num_codes, num_factors = x_train.shape[1], y_train.shape[1]
    scores = np.zeros((num_codes, num_factors))
    for i in range(num_codes):
        for k in range(num_factors):
            if continuous_factors:
                cov = np.cov(x_train[:, i], y_train[:, k], ddof=1)
                denom = cov[0, 0] * cov[1, 1]
                scores[i, k] = cov[0, 1] ** 2 / denom if denom > 0 else 0.0
            elif np.var(x_train[:, i]) > 0:
                model = svm.LinearSVC(C=0.01, class_weight='balanced', random_state=0)
                model.fit(x_train[:, i : i + 1], y_train[:, k])
                scores[i, k] = np.mean(model.predict(x_test[:, i : i + 1]) == y_test[:, k])
    top = np.sort(scores, axis=0)
    second = top[-2] if num_codes > 1 else 0.0
    return float(np.mean(top[-1] - second))


def sap(
    representation_fn: RepresentationFn,
    sample_factors: FactorSampler,
    observe: ObserveFn,
    key: jax.Array,
    *,
    num_train: int = 10_000,
    num_test: int = 5_000,
    continuous_factors: bool = False,
) -> float:
    """Separated Attribute Predictability.

    Estimator (Kumar et al. 2018, as in disentanglement_lib): a score S_ik of how well code i
    alone predicts factor k; SAP = mean over factors of (largest - second largest S_ik over
    codes). Discrete factors (default): S_ik is the test accuracy (`num_test` draws) of a linear
    SVM (scikit-learn LinearSVC, C=0.01, balanced classes) fitted on code i alone
    (`num_train` draws); a collapsed code scores 0. Its maximum is below 1: the second best
    code still scores at chance (about 1 / values, 0.5 for a binary factor), and one threshold
    per class cannot always carve a many-valued factor out of one dimension.
    continuous_factors=True: S_ik is the squared correlation of code i and the factor index on
    the train draws (maximum 1).

    `representation_fn`, `sample_factors`, `observe` and `key` are as in the module docstring.

    Args:
      num_train: draws to fit the classifiers.
      num_test: draws to test them.
      continuous_factors: score by squared correlation instead of classification.

    Returns:
      SAP, in [0, 1].

    References: Kumar, Sattigeri & Balakrishnan (2018), Variational Inference of Disentangled
    Latent Concepts from Unlabeled Observations, ICLR; Locatello et al. (2019).
    """
    train_key, test_key = jax.random.split(key)
    x_train, y_train = sample_representations(
        representation_fn, sample_factors, observe, train_key, num_train
    )
    x_test, y_test = sample_representations(
        representation_fn, sample_factors, observe, test_key, num_test
    )
    return sap_from_samples(x_train, y_train, x_test, y_test, continuous_factors=continuous_factors)
