"""The DifferNet detector: training loop, batching, scoring and model files around the flow."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..._errors import ConfigError, DataError
from ..._validation import check_float_range, check_positive_int
from ..base import BaseDetector, check_features, register_detector
from .flow import build_flow

__all__ = ["DifferNet"]

_SCORES = ("mean_z2", "nll")
# Vectors per forward pass when scoring: bounds memory; results agree to float rounding.
_SCORE_BATCH = 4096
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@register_detector("differnet")
class DifferNet(BaseDetector):
    """DifferNet: a normalizing flow on pooled backbone features of several views.

    The flow (FrEIA GLOW couplings with DifferNet's soft clamp, see
    :func:`~robustsdd.detectors.differnet.flow.build_flow`) is trained by maximum
    likelihood on every (image, view) feature vector, with DifferNet's loss
    ``mean(0.5 * sum(z**2) - log|det J|) / D`` and Adam. The score of an image is
    the mean of ``z**2`` over all dimensions and all its views (DifferNet's
    ``mean(z**2, dim=(-2, -1))``; about 1 for data like the training data), or,
    with ``score="nll"``, the negative log-likelihood per dimension averaged over
    views.

    The defaults are :func:`~robustsdd.detectors.differnet.presets.differnet_cpu`'s:
    a small, noise-regularised flow meant for a CPU (BENCHMARKS.md §3); use
    :func:`~robustsdd.detectors.differnet.presets.differnet_paper` for the
    paper's 172 M-parameter configuration.

    Parameters
    ----------
    n_blocks : int
        Number of (permutation, GLOW coupling) blocks. Paper: 8.
    hidden, n_hidden_layers : int
        Width and number of hidden layers of each coupling's subnet. Paper: 2048, 3.
    clamp : float
        Soft-clamp ``alpha``: every scale factor lies within ``exp(+-alpha)``.
    lr, betas, eps, weight_decay : float
        Adam's settings (DifferNet: lr 2e-4; the CPU default takes 1e-3 with smaller batches).
    epochs : int
        Passes over all training vectors in :meth:`fit`. Paper: 192 (24 x 8).
    finetune_epochs : int or None
        Passes in :meth:`partial_fit` (fine-tuning); ``None`` means ``epochs``.
    batch_size : int
        (image, view) vectors per optimisation step. Paper: 96 (24 images x 4 views).
    standardize : bool
        Standardise each feature with the mean and standard deviation of the
        first :meth:`fit`'s training vectors. The same statistics are reused by
        :meth:`partial_fit` and for scoring, so fine-tuning never shifts the scale.
    score : {"mean_z2", "nll"}
        ``"mean_z2"``: mean of ``z**2`` over dimensions and views (DifferNet,
        the paper's threshold 1.5 applies to it). ``"nll"``: mean over views of
        ``-log p(x) / D``, including the standardisation's Jacobian, in nats.
    zero_init : bool
        Start every coupling at the identity (last subnet layer zeroed); off by
        default, as in DifferNet.
    noise_std : float
        Standard deviation of Gaussian noise added to the (standardised)
        training vectors at every step (default 0.3). 0 (DifferNet) trains on the
        vectors as they are; a little noise keeps a flow from memorising a small
        training set (Rothfuss et al., 2019, "Noise regularization for
        conditional density estimation").
    score_with_noise : bool
        With ``noise_std > 0``, score inputs perturbed by the same noise (from a
        generator seeded by ``random_state``, so scores stay deterministic). The
        flow models the density of noisy vectors; scoring noisy vectors keeps
        the mean-z² scale DifferNet's threshold assumes (about 1 for normal
        data), where clean vectors would score far below 1.
    random_state : int or None
        Seeds the weight initialisation and the shuffling, without touching
        global random generators. ``None`` draws fresh entropy.
    progress : bool
        Show a tqdm bar over epochs.
    device : str
        Torch device for training and scoring, e.g. ``"cpu"`` or ``"cuda"``.

    Attributes
    ----------
    flow_ : FrEIA.framework.SequenceINN
        The trained flow.
    n_features_ : int
        Features per view seen in :meth:`fit`.
    mean_, std_ : numpy.ndarray
        Standardisation statistics (zeros and ones when ``standardize=False``).
    train_loss_ : list of float
        Mean loss per epoch, for :meth:`fit` and then every :meth:`partial_fit`
        appended (``nan`` for an epoch whose every step was skipped).
    n_skipped_steps_ : int
        Steps skipped because the loss or a gradient was not finite.
    n_partial_fits_ : int
        Number of fine-tuning calls since :meth:`fit`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(20, 4, 6))            # 20 images, 4 views, 6 features
    >>> det = DifferNet(n_blocks=2, hidden=16, epochs=3).fit(X)
    >>> det.decision_function(X).shape
    (20,)
    """

    def __init__(
        self,
        n_blocks: int = 4,
        hidden: int = 256,
        n_hidden_layers: int = 2,
        clamp: float = 3.0,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.8, 0.8),
        eps: float = 1e-4,
        weight_decay: float = 1e-5,
        epochs: int = 40,
        finetune_epochs: int | None = None,
        batch_size: int = 64,
        standardize: bool = True,
        score: str = "mean_z2",
        zero_init: bool = False,
        noise_std: float = 0.3,
        score_with_noise: bool = True,
        random_state: int | None = 0,
        progress: bool = False,
        device: str = "cpu",
    ):
        self.n_blocks = n_blocks
        self.hidden = hidden
        self.n_hidden_layers = n_hidden_layers
        self.clamp = clamp
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.finetune_epochs = finetune_epochs
        self.batch_size = batch_size
        self.standardize = standardize
        self.score = score
        self.zero_init = zero_init
        self.noise_std = noise_std
        self.score_with_noise = score_with_noise
        self.random_state = random_state
        self.progress = progress
        self.device = device

    # -- public API --------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: object = None) -> DifferNet:
        """Build a fresh flow and train it on every (image, view) vector of ``X``.

        Parameters
        ----------
        X : array of shape (n_images, n_views, n_features) or (n_images, n_features)
        y : ignored

        Returns
        -------
        self
        """
        self._check_params()
        X = check_features(X)
        n_features = X.shape[2]
        if n_features < 2:
            raise DataError(f"DifferNet needs at least 2 features per view; got {n_features}")
        vectors = X.reshape(-1, n_features)
        if self.standardize:
            mean = vectors.mean(axis=0, dtype=np.float64)
            std = vectors.std(axis=0, dtype=np.float64)
            # A constant feature carries no information; leave its scale alone.
            std = np.where(std > 1e-12, std, 1.0)
        else:
            mean, std = np.zeros(n_features), np.ones(n_features)
        self.n_features_ = int(n_features)
        self.mean_ = mean.astype(np.float32)
        self.std_ = std.astype(np.float32)
        self.train_loss_: list[float] = []
        self.n_skipped_steps_ = 0
        self.n_partial_fits_ = 0
        self.flow_ = self._new_flow(seed=self._seed(), zero_init=self.zero_init)
        self._train(vectors, int(self.epochs), stage=0)
        self.is_fitted_ = True
        return self

    def partial_fit(self, X: ArrayLike, y: object = None) -> DifferNet:
        """Fine-tune the current flow on ``X`` for ``finetune_epochs`` epochs.

        Training continues from the current weights with a fresh Adam optimiser
        and the standardisation of the first :meth:`fit` (One-Shot Removal's
        "fine-tune the same model"). If the detector is not fitted yet, this is
        :meth:`fit`.
        """
        if not getattr(self, "is_fitted_", False):
            return self.fit(X)
        self._check_params()
        X = check_features(X, n_features=self.n_features_)
        epochs = self.epochs if self.finetune_epochs is None else self.finetune_epochs
        self.n_partial_fits_ += 1
        self._train(X.reshape(-1, self.n_features_), int(epochs), stage=self.n_partial_fits_)
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Anomaly score of each image (higher is more anomalous), float64 of shape (n_images,)."""
        z, log_det = self._forward(X)
        d = z.shape[-1]
        if self.score == "mean_z2":
            scores = np.mean(z**2, axis=(1, 2))
        else:
            # -log p(x) / D with a standard normal prior on z; the standardisation
            # x -> (x - mean) / std adds -sum(log std) to log|det J|.
            log_det = log_det - np.sum(np.log(self.std_.astype(np.float64)))
            nll = (0.5 * np.sum(z**2, axis=2) - log_det) / d + _HALF_LOG_2PI
            scores = nll.mean(axis=1)
        if not np.all(np.isfinite(scores)):
            warnings.warn(
                f"DifferNet: {int(np.sum(~np.isfinite(scores)))} of {len(scores)} scores are "
                "not finite (the flow overflows on those images)",
                RuntimeWarning,
                stacklevel=2,
            )
        return scores

    def transform(
        self, X: ArrayLike, return_log_det: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Map features to the flow's latent space.

        Returns ``z`` as float64 of shape (n_images, n_views, n_features), and with
        ``return_log_det=True`` also the flow's ``log|det J|`` per (image, view),
        shape (n_images, n_views) (the standardisation's constant is not included).
        With ``noise_std > 0`` and ``score_with_noise``, ``z`` is that of the
        noise-perturbed inputs that :meth:`decision_function` scores.
        """
        z, log_det = self._forward(X)
        return (z, log_det) if return_log_det else z

    # -- training ----------------------------------------------------------------------
    def _train(self, vectors: np.ndarray, epochs: int, stage: int) -> None:
        device = torch.device(self.device)
        flow = self.flow_.to(device)
        x_all = self._standardize(torch.from_numpy(vectors)).to(device)
        n, d = x_all.shape
        params = [p for p in flow.parameters() if p.requires_grad]  # permutations are frozen
        beta1, beta2 = (float(b) for b in self.betas)  # two: checked by _check_params
        optimizer = torch.optim.Adam(
            params,
            lr=float(self.lr),
            betas=(beta1, beta2),
            eps=float(self.eps),
            weight_decay=float(self.weight_decay),
        )
        # One generator per training call, seeded by (random_state, stage): fit and each
        # fine-tuning shuffle differently but reproducibly, and no global RNG is used.
        seed = int(np.random.SeedSequence([self._seed(), stage]).generate_state(1)[0])
        gen = torch.Generator().manual_seed(seed)
        batch = int(self.batch_size)
        noise_std = float(self.noise_std)
        skipped = 0
        epoch_iter: Iterable[int] = range(epochs)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            epoch_iter = bar = tqdm(epoch_iter, desc="DifferNet", unit="epoch")
        flow.train()
        for _ in epoch_iter:
            order = torch.randperm(n, generator=gen).to(device)
            losses: list[float] = []
            for start in range(0, n, batch):
                x = x_all[order[start : start + batch]]
                if noise_std > 0:
                    # Noise regularisation (Rothfuss et al., 2019): a density fitted to
                    # blurred points cannot collapse onto its few hundred training vectors.
                    x = x + noise_std * torch.randn(x.shape, generator=gen).to(device)
                optimizer.zero_grad(set_to_none=True)
                z, log_det = flow(x)
                loss = torch.mean(0.5 * torch.sum(z**2, dim=1) - log_det) / d
                ok = bool(torch.isfinite(loss))
                if ok:
                    loss.backward()
                    grads = [p.grad for p in params if p.grad is not None]
                    ok = all(bool(torch.isfinite(g).all()) for g in grads)
                if not ok:
                    # A diverging step would write inf/NaN into the weights for good:
                    # drop it and take smaller steps from here on.
                    optimizer.zero_grad(set_to_none=True)
                    for group in optimizer.param_groups:
                        group["lr"] *= 0.5
                    skipped += 1
                    continue
                optimizer.step()
                losses.append(float(loss.detach()))
            mean_loss = float(np.mean(losses)) if losses else float("nan")
            self.train_loss_.append(mean_loss)
            if bar is not None:
                bar.set_postfix(loss=f"{mean_loss:.4f}")
        flow.eval()
        self.n_skipped_steps_ += skipped
        if skipped:
            warnings.warn(
                f"DifferNet: skipped {skipped} training step(s) with a non-finite loss or "
                f"gradient and halved the learning rate each time (now "
                f"{optimizer.param_groups[0]['lr']:.3g}); consider a lower lr or standardize=True",
                RuntimeWarning,
                stacklevel=3,
            )

    # -- scoring -----------------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, X):
        self._check_is_fitted()
        X = check_features(X, n_features=self.n_features_)
        n_images, n_views, d = X.shape
        device = torch.device(self.device)
        flow = self.flow_.to(device)
        flow.eval()
        x = self._standardize(torch.from_numpy(X))
        if float(self.noise_std) > 0 and self.score_with_noise:
            # One fixed noise vector per view position: an image's score then depends on
            # nothing but the image (not on its batch or neighbours), and the shared noise
            # shifts every image alike instead of reshuffling their ranks.
            gen = torch.Generator().manual_seed(self._seed() + 7919)  # apart from training draws
            x = x + float(self.noise_std) * torch.randn((n_views, d), generator=gen)
        x_all = x.reshape(-1, d)
        zs, dets = [], []
        for start in range(0, len(x_all), _SCORE_BATCH):
            z, log_det = flow(x_all[start : start + _SCORE_BATCH].to(device))
            zs.append(z.double().cpu())
            dets.append(torch.as_tensor(log_det).double().expand(len(z)).cpu())
        z = torch.cat(zs).numpy().reshape(n_images, n_views, d)
        log_det = torch.cat(dets).numpy().reshape(n_images, n_views)
        return z, log_det

    # -- helpers -----------------------------------------------------------------------
    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.standardize:
            return x
        return (x - torch.from_numpy(self.mean_)) / torch.from_numpy(self.std_)

    def _seed(self) -> int:
        if self.random_state is None:
            # Fresh entropy once per detector, so fit and partial_fit stay consistent.
            if not hasattr(self, "_entropy_seed"):
                self._entropy_seed = int(np.random.SeedSequence().generate_state(1)[0])
            return self._entropy_seed
        return int(self.random_state)

    def _new_flow(self, seed: int, zero_init: bool = False):
        return build_flow(
            self.n_features_,
            n_blocks=int(self.n_blocks),
            hidden=int(self.hidden),
            n_hidden_layers=int(self.n_hidden_layers),
            clamp=float(self.clamp),
            zero_init=zero_init,
            seed=seed,
        )

    def _check_params(self) -> None:
        for name in ("n_blocks", "hidden", "n_hidden_layers", "batch_size"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.epochs, "epochs", minimum=0)
        if self.finetune_epochs is not None:
            check_positive_int(self.finetune_epochs, "finetune_epochs", minimum=0)
        if self.random_state is not None:
            check_positive_int(self.random_state, "random_state", minimum=0)
        for name in ("clamp", "lr", "eps"):
            check_float_range(getattr(self, name), name, low=0, low_inclusive=False)
        for name in ("noise_std", "weight_decay"):
            check_float_range(getattr(self, name), name, low=0)
        try:
            betas = tuple(self.betas)
            if len(betas) != 2:
                raise ConfigError("not two betas")
            for b in betas:
                check_float_range(b, "betas", low=0, high=1, high_inclusive=False)
        except (TypeError, ConfigError):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}") from None
        if self.score not in _SCORES:
            raise ConfigError(f"score must be one of {_SCORES}, got {self.score!r}")

    # -- model files -------------------------------------------------------------------
    def _get_state(self) -> dict[str, torch.Tensor]:
        state = {f"flow.{k}": v for k, v in self.flow_.state_dict().items()}
        state["mean"] = torch.from_numpy(self.mean_)
        state["std"] = torch.from_numpy(self.std_)
        state["n_features"] = torch.tensor(self.n_features_, dtype=torch.int64)
        state["train_loss"] = torch.tensor(self.train_loss_, dtype=torch.float64)
        state["n_skipped_steps"] = torch.tensor(self.n_skipped_steps_, dtype=torch.int64)
        state["n_partial_fits"] = torch.tensor(self.n_partial_fits_, dtype=torch.int64)
        return state

    def _set_state(self, state: dict[str, torch.Tensor]) -> None:
        self._check_params()
        self.n_features_ = int(state["n_features"])
        self.mean_ = state["mean"].to(torch.float32).numpy().copy()
        self.std_ = state["std"].to(torch.float32).numpy().copy()
        if self.mean_.shape != (self.n_features_,) or self.std_.shape != (self.n_features_,):
            raise ValueError("standardisation statistics do not match n_features")
        # The initial weights are overwritten at once; any seed will do.
        flow = self._new_flow(seed=0)
        flow_state = {k[len("flow.") :]: v for k, v in state.items() if k.startswith("flow.")}
        flow.load_state_dict(flow_state, strict=True)
        flow.eval()
        self.flow_ = flow.to(torch.device(self.device))
        self.train_loss_ = [float(v) for v in state.get("train_loss", torch.zeros(0)).tolist()]
        self.n_skipped_steps_ = int(state.get("n_skipped_steps", 0))
        self.n_partial_fits_ = int(state.get("n_partial_fits", 0))
        self.is_fitted_ = True
