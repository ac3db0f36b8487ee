"""`robustsdd fit` with hooks, for interrupt tests: count detector fits, pause at a checkpoint.

Run as a script: ``python tests/fit_with_hooks.py fit IMAGES --out MODEL …``. With
``PAUSE_AFTER=<stage>`` in the environment, it touches ``$PAUSED_MARKER`` right after that
checkpoint is written and sleeps ``$PAUSE_SECONDS`` (default 120) so the caller can send a
signal there. Used by tests/test_fit_resume.py and benchmarks/reliability_table.py.
"""

import atexit
import os
import signal
import sys
import time

from robustsdd import cli
from robustsdd.detectors.gaussian import GaussianDetector
from robustsdd.workflow import checkpoints

# Ctrl-C as at a terminal, even when this runs in a background job (where SIGINT is ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)

fits = []
_fit = GaussianDetector.fit


def fit(self, X, y=None):
    fits.append(len(X))
    return _fit(self, X, y)


GaussianDetector.fit = fit
atexit.register(lambda: print(f"detector fits: {len(fits)}", flush=True))

_save = checkpoints.FitCheckpoints.save


def save(self, stage, **kw):
    _save(self, stage, **kw)
    if stage == os.environ.get("PAUSE_AFTER"):
        open(os.environ["PAUSED_MARKER"], "w").close()
        time.sleep(float(os.environ.get("PAUSE_SECONDS", "120")))  # the signal arrives here


checkpoints.FitCheckpoints.save = save

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
