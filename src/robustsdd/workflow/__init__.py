"""The fit workflow: fit with cleaning, choose the decision threshold, resume from checkpoints."""

from .fit import check_model_dir, fit_folder, fit_images, fit_model
from .threshold import choose_decision_threshold, out_of_fold_scores

__all__ = [
    "fit_folder",
    "fit_images",
    "fit_model",
    "check_model_dir",
    "choose_decision_threshold",
    "out_of_fold_scores",
]
