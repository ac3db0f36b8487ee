"""A detector ensemble: several detectors on one image's patch features, scores combined
after a label-free standardisation.

Detectors disagree across data: on pooled features a Gaussian is strong where defects
change an image's overall statistics, PatchCore where they are small and local. The
ensemble runs both kinds on one set of features — the patch features of a
:class:`~robustsdd.features.PatchFeaturizer` whose stages include the last one:

* a *patch* member (PatchCore) reads every patch row, columns ``[:patch_channels]``
  (the intermediate stages PatchCore is designed for);
* a *pooled* member (Gaussian, kNN) reads one vector per image: the mean over its
  patch rows of every column, i.e. the globally average-pooled maps of all stages.

**Standardisation.** Members' scores live on unrelated scales (Mahalanobis distance per
feature, a kNN distance ratio, a patch distance), so they are put on a common one
before combining, without labels: each member's training images are scored out of fold
(``n_folds`` copies, each trained on the other folds; PatchCore's copies grow
their banks from the final model's, ``fold_fits``), and a score ``s`` becomes
``z = (log s − median) / (1.4826 · MAD)``, median and MAD of the log out-of-fold
scores. Out-of-fold, because in-sample scores of a memory bank or a Gaussian are too low
by an amount that differs by member; log, because the scores are positive and
right-skewed; median and MAD, because the training set may be contaminated. The
ensemble's score is ``exp(mean of its members' z)``: a geometric mean of standardised
scores, positive and about 1 for a typical training image like the other detectors'
(the scale-free cleaning rules read log scores, which are then the mean ``z``).

Why a mean of standardised scores and not ranks or p-values: an empirical p-value
against ~100 training scores saturates at 1/(n + 1) for every image beyond the
training range — where most defective images are — so a rank or p-value combination
(e.g. Fisher's) would tie them, while the mean of ``z`` keeps how far out each is.
Averaging over members whose errors differ cancels part of each member's noise.

The out-of-fold scores are kept (:attr:`out_of_fold_scores_`, combined on the same
scale): cleaning and the decision threshold ask for out-of-fold scores of the training
images, and get these instead of fitting the whole ensemble ``n_folds`` more times
(:meth:`out_of_fold_scores`).

Maps: where a member localises (PatchCore), :meth:`patch_scores` gives its patch scores
on the ensemble's scale (the same log transform and standardisation), so heat-maps show
the patch member's evidence in the units the image score is in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from sklearn.model_selection import KFold

from .._errors import ConfigError, DataError
from .._validation import check_positive_int
from ..features.storage import image_blocks
from .base import (
    BaseDetector,
    check_features,
    create_detector,
    register_detector,
    result_params,
)

__all__ = ["EnsembleDetector", "POOLED_MEMBERS", "PATCH_MEMBERS"]

PATCH_MEMBERS = ("patchcore",)
POOLED_MEMBERS = ("gaussian", "knn")
FOLD_FITS = ("derived", "independent")
_FLOOR = 1e-12  # scores are positive; a zero distance (a duplicate image) must not give -inf
_MAD_TO_SD = 1.4826


def pooled_vectors(X: np.ndarray) -> np.ndarray:
    """One vector per image: the mean of its finite patch rows, (n, 1, d).

    Computed on blocks of images, so a memory-mapped ``X`` is never copied whole."""
    out = np.empty((len(X), 1, X.shape[2]), dtype=np.float32)
    for block in image_blocks(X):
        part = X[block]
        valid = np.isfinite(part[:, :, 0])
        summed = np.where(valid[:, :, None], part, 0.0).sum(axis=1, dtype=np.float64)
        out[block, 0] = summed / valid.sum(axis=1, keepdims=True)
    return out


def _positive(z: np.ndarray) -> np.ndarray:
    """Mean standardised log score → a positive score (exp; clipped so it stays finite)."""
    return np.exp(np.minimum(z, 700.0))


@register_detector("ensemble")
class EnsembleDetector(BaseDetector):
    """Patch and pooled detectors on one set of patch features, standardised and averaged.

    Parameters
    ----------
    members : sequence of str
        Registered detector names: ``"patchcore"`` reads the patch rows, ``"gaussian"``
        and ``"knn"`` the images' pooled vectors (default: all three).
    patch_channels : int or None
        Leading feature columns the patch member reads (the recipe sets the channels of
        stages 2 + 3); None: all columns.
    member_params : mapping or None
        Keyword arguments per member name, e.g. ``{"knn": {"k": 3}}``.
    n_folds : int
        Folds of the out-of-fold scores that standardise each member (default 5).
    fold_fits : {"derived", "independent"}
        How a member's fold models are made. ``"derived"`` (default): from the member
        fitted on every image where the member can (PatchCore's
        :meth:`~robustsdd.detectors.patchcore.PatchCore.subset_model`: each fold keeps
        the bank patches of its own images and the greedy selection only tops the bank
        up, instead of ``n_folds`` selections from scratch — at 1,000 images most of a
        fit's time; BENCHMARKS.md §11), else a fresh fit. ``"independent"``: a fresh fit
        on every fold (the slower original).
    random_state : int
        Seed of the folds and of members that take one.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(20, 16, 6)).astype(np.float32)
    >>> ens = EnsembleDetector(member_params={"knn": {"k": 2}}).fit(X)
    >>> odd = X[:2].copy(); odd[:, 3] += 8  # one patch far off
    >>> s = ens.decision_function(np.concatenate([X[:2], odd]))
    >>> bool(s[2:].min() > s[:2].max())
    True
    """

    feature_layout = "patches"

    def __init__(
        self,
        members: Sequence[str] = ("patchcore", "gaussian", "knn"),
        patch_channels: int | None = None,
        member_params: Mapping[str, Mapping] | None = None,
        n_folds: int = 5,
        fold_fits: str = "derived",
        random_state: int = 0,
    ):
        self.members = members
        self.patch_channels = patch_channels
        self.member_params = member_params
        self.n_folds = n_folds
        self.fold_fits = fold_fits
        self.random_state = random_state

    # -- members ------------------------------------------------------------------------
    def _check_params(self) -> list[str]:
        if isinstance(self.members, str) or not self.members:
            raise ConfigError(f"members must be a non-empty list of names, got {self.members!r}")
        names = [str(m) for m in self.members]
        known = PATCH_MEMBERS + POOLED_MEMBERS
        for name in names:
            if name not in known:
                raise ConfigError(
                    f"unknown ensemble member {name!r}; choose from: {', '.join(known)}"
                )
        if len(set(names)) != len(names):
            raise ConfigError(f"ensemble members repeat: {names}")
        extra = set(self.member_params or {}) - set(names)
        if extra:
            raise ConfigError(f"member_params for detectors not in members: {sorted(extra)}")
        if self.patch_channels is not None:
            check_positive_int(self.patch_channels, "patch_channels")
        check_positive_int(self.n_folds, "n_folds", minimum=2)
        if self.fold_fits not in FOLD_FITS:
            raise ConfigError(
                f"unknown fold_fits {self.fold_fits!r}; choose one of: {', '.join(FOLD_FITS)}"
            )
        check_positive_int(self.random_state, "random_state", minimum=0)
        return names

    def _new_member(self, name: str) -> BaseDetector:
        params = dict((self.member_params or {}).get(name, {}))
        member = create_detector(name, **params)
        if "random_state" in member.get_params() and "random_state" not in params:
            member.set_params(random_state=self.random_state)
        return member

    def part_params(self) -> dict[str, dict]:
        """Each member's effective parameters (its defaults included; ``random_state``
        left out: the ensemble's own sets it), by name — what keys of results and
        checkpoints see besides the ensemble's own parameters."""
        names = self._check_params()
        return {
            name: result_params(self._new_member(name), ignore=("random_state",)) for name in names
        }

    def _member_inputs(self, names: Sequence[str], X: np.ndarray) -> dict[str, np.ndarray]:
        """Each member's view of ``X``: a view of the patch rows' leading columns for patch
        members, the pooled vectors (computed once, shared) for pooled members."""
        inputs = {}
        if any(name in POOLED_MEMBERS for name in names):
            pooled = pooled_vectors(X)
            inputs.update({name: pooled for name in names if name in POOLED_MEMBERS})
        leading = X if self.patch_channels is None else X[:, :, : int(self.patch_channels)]
        inputs.update({name: leading for name in names if name in PATCH_MEMBERS})
        return inputs

    def _check_input(self, X: ArrayLike, n_features: int | None = None) -> np.ndarray:
        X = check_features(X, n_features=n_features, padded=True)
        if self.patch_channels is not None and int(self.patch_channels) > X.shape[2]:
            raise DataError(
                f"patch_channels={self.patch_channels} but the features have {X.shape[2]} columns"
            )
        return X

    # -- fitting ------------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: object = None) -> EnsembleDetector:
        names = self._check_params()
        X = self._check_input(X)
        n = len(X)
        n_folds = min(int(self.n_folds), n)
        if n < 2 * n_folds or n < 4:
            raise DataError(
                f"the ensemble standardises its members by {n_folds}-fold out-of-fold scores "
                f"and needs at least {max(2 * n_folds, 4)} training images; got {n} "
                "(for fewer, choose a single detector, e.g. --detector patchcore)"
            )
        folds = list(KFold(n_folds, shuffle=True, random_state=self.random_state).split(X))
        members, oof = [], np.empty((len(names), n))
        inputs = self._member_inputs(names, X)
        for m, name in enumerate(names):
            A = inputs[name]
            final = self._new_member(name).fit(A)
            derive = getattr(final, "subset_model", None) if self.fold_fits == "derived" else None
            for train_idx, test_idx in folds:
                if derive is not None:
                    fold_model = derive(A, train_idx)
                else:
                    fold_model = self._new_member(name).fit(A[train_idx])
                oof[m, test_idx] = fold_model.decision_function(A[test_idx])
            members.append(final)
        logs = np.log(np.maximum(oof, _FLOOR))
        loc = np.median(logs, axis=1)
        scale = _MAD_TO_SD * np.median(np.abs(logs - loc[:, None]), axis=1)
        # A member whose out-of-fold scores do not spread (all equal) gets unit scale.
        scale = np.where(scale > 0, scale, 1.0)
        self.members_ = members
        self.member_names_ = names
        self.loc_, self.scale_ = loc, scale
        self.n_features_ = X.shape[2]
        self.n_folds_ = n_folds
        self.member_oof_scores_ = oof
        self.out_of_fold_scores_: np.ndarray | None = self._combine(oof)
        self.is_fitted_ = True
        return self

    def out_of_fold_scores(self, n_folds: int, random_state: int) -> np.ndarray | None:
        """Out-of-fold scores of the training images, if computed with these folds.

        The ensemble's own: each member's fold models score the images they did not see,
        standardised and averaged as in :meth:`decision_function` (the standardisation
        uses all the out-of-fold scores). None when the folds asked for are others.
        """
        self._check_is_fitted()
        oof = getattr(self, "out_of_fold_scores_", None)
        if oof is None or int(n_folds) != self.n_folds_ or int(random_state) != self.random_state:
            return None
        return oof.copy()

    # -- scoring ------------------------------------------------------------------------
    def _standardise(self, m: int, scores: np.ndarray) -> np.ndarray:
        return (np.log(np.maximum(scores, _FLOOR)) - self.loc_[m]) / self.scale_[m]

    def _combine(self, member_scores: np.ndarray) -> np.ndarray:
        z = [self._standardise(m, s) for m, s in enumerate(member_scores)]
        return _positive(np.mean(z, axis=0))

    def member_scores(self, X: ArrayLike) -> dict[str, np.ndarray]:
        """Each member's standardised score ``z`` of the images of ``X``, by name."""
        self._check_is_fitted()
        X = self._check_input(X, self.n_features_)
        inputs = self._member_inputs(self.member_names_, X)
        return {
            name: self._standardise(m, member.decision_function(inputs[name]))
            for m, (name, member) in enumerate(zip(self.member_names_, self.members_))
        }

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        return _positive(np.mean(list(self.member_scores(X).values()), axis=0))

    @property
    def localizes_anomalies(self) -> bool:
        """Whether a member gives patch scores (only then are there maps)."""
        names = getattr(self, "member_names_", None) or list(self.members)
        return any(name in PATCH_MEMBERS for name in names)

    def patch_scores(self, X: ArrayLike) -> np.ndarray:
        """Patch scores of the localising members on the ensemble's scale (exp of the mean
        of their standardised log patch scores), ``(n_images, n_patches)``; NaN for
        padding rows. An image's score under a lone patch member is its highest one."""
        self._check_is_fitted()
        X = self._check_input(X, self.n_features_)
        patch_names = [name for name in self.member_names_ if name in PATCH_MEMBERS]
        inputs = self._member_inputs(patch_names, X)
        maps = [
            self._standardise(m, member.patch_scores(inputs[name]))
            for m, (name, member) in enumerate(zip(self.member_names_, self.members_))
            if name in PATCH_MEMBERS
        ]
        if not maps:
            raise ConfigError(
                f"no ensemble member localises ({', '.join(self.member_names_)}): add "
                "'patchcore' to members for anomaly maps"
            )
        return _positive(np.mean(maps, axis=0))

    def anomaly_maps(self, X: ArrayLike, size: Sequence[int] | None = None) -> np.ndarray:
        """The patch member's maps on the ensemble's scale (see :meth:`patch_scores`),
        on its square patch grid."""
        scores = self.patch_scores(X)
        side = int(round(np.sqrt(scores.shape[1])))
        if side * side != scores.shape[1]:
            raise DataError(
                f"{scores.shape[1]} patches per image are not a square grid; maps of "
                "other shapes come from robustsdd.Model.anomaly_maps"
            )
        maps = scores.reshape(-1, side, side)
        if size is None:
            return maps
        t = torch.from_numpy(maps)[:, None].float()
        resized = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
        return resized[:, 0].double().numpy()

    # -- state --------------------------------------------------------------------------
    def _get_state(self) -> dict[str, torch.Tensor]:
        state = {
            "loc": torch.from_numpy(np.asarray(self.loc_, np.float64)),
            "scale": torch.from_numpy(np.asarray(self.scale_, np.float64)),
            "n_features": torch.tensor([self.n_features_], dtype=torch.int64),
            "n_folds": torch.tensor([self.n_folds_], dtype=torch.int64),
        }
        # Kept with the model: a fit reads its stages back from checkpoints, and the
        # decision threshold then still borrows these instead of refitting n_folds times.
        if self.out_of_fold_scores_ is not None:
            state["out_of_fold_scores"] = torch.from_numpy(
                np.asarray(self.out_of_fold_scores_, np.float64)
            )
        for m, member in enumerate(self.members_):
            for key, tensor in member._get_state().items():
                state[f"member{m}.{key}"] = tensor
        return state

    def _set_state(self, state: dict[str, torch.Tensor]) -> None:
        names = self._check_params()
        loc, scale = state["loc"].double().numpy(), state["scale"].double().numpy()
        if loc.shape != (len(names),) or scale.shape != (len(names),):
            raise ValueError(f"loc/scale hold {loc.shape} values for {len(names)} members")
        members = []
        for m, name in enumerate(names):
            prefix = f"member{m}."
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            member = self._new_member(name)
            member._set_state(sub)
            member.is_fitted_ = True
            members.append(member)
        self.members_, self.member_names_ = members, names
        self.loc_, self.scale_ = loc, scale
        self.n_features_ = int(state["n_features"][0])
        oof = state.get("out_of_fold_scores")
        self.out_of_fold_scores_ = None if oof is None else oof.double().numpy()
        folds = state.get("n_folds")
        self.n_folds_ = int(self.n_folds) if folds is None else int(folds[0])
