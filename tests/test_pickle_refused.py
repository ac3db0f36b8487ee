"""A model folder whose state file is a pickle with a payload is refused; the payload never runs."""

import json
import os
import pickle

import numpy as np
import pytest

from robustsdd import GaussianDetector, ModelFileError, load_detector


class _Payload:
    """Unpickling this object would create the marker file (a stand-in for any code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def model_dir(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 2, 4))
    return GaussianDetector().fit(X).save(tmp_path / "model")


def test_pickle_in_place_of_the_safetensors_state_is_refused(model_dir, tmp_path):
    marker = tmp_path / "pwned"
    (model_dir / "state.safetensors").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ModelFileError, match="state.safetensors"):
        load_detector(model_dir)
    assert not marker.exists()


def test_version_one_folder_with_a_torch_pickle_is_refused_not_unpickled(model_dir, tmp_path):
    marker = tmp_path / "pwned"
    os.remove(model_dir / "state.safetensors")
    (model_dir / "state.pt").write_bytes(pickle.dumps(_Payload(str(marker))))
    config = json.loads((model_dir / "config.json").read_text())
    config["format_version"] = 1
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="version"):
        load_detector(model_dir)
    assert not marker.exists()
