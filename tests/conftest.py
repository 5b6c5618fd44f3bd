"""Shared fixtures: a tiny random-weight CLIP, the test device, hypothesis profiles, seeded RNGs."""
import os
import random
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

# derandomize: the examples come from a hash of the test, so every run (and every machine)
# tries the same ones; no database: a failure found once is not replayed on one machine only.
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          derandomize=True, database=None)
settings.register_profile("dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          derandomize=True, database=None)
# The input fuzz (tests/test_fuzz_inputs.py) takes its budget from these two, whatever profile is
# loaded: fuzz-small in every run (make test), fuzz with HYPOTHESIS_PROFILE=fuzz (make fuzz).
# Each reader tries max_examples damaged files, each command a tenth (at least 2); the times
# (docs/inputs.md, "The fuzz") were measured on the 2-core machine with `pytest tests/test_fuzz_inputs.py`.
settings.register_profile("fuzz-small", max_examples=15, deadline=None, derandomize=True, database=None)
settings.register_profile("fuzz", max_examples=500, deadline=None, derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Never reach for a hub from a test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_DEVICE = os.environ.get("TORCH_DEVICE", "cpu")
CLASSNAMES = ["ApplyEyeMakeup", "jump", "brush_hair", "PlayingCello", "ride_bike"]


SEED = 0


def seed_everything() -> None:
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    """Each fixture draws from the same seeded state (its own dependencies are built by now),
    so a module- or session-scoped fixture is the same whichever test happens to build it."""
    seed_everything()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    """Each test body starts from the same seeded state, whatever ran before it and whichever
    fixtures were already cached: selection and order never change a test's numbers."""
    seed_everything()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors on a 2-core machine: OpenMP's spinning second thread costs far more
    than it saves (the suite ran 10x slower with two threads while the cores were busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_clip():
    """(clip_model, tokenizer) of the registered tiny architecture, random weights, seed 0."""
    from videocoop.clip import TINY_MODEL, load_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(TINY_MODEL, seed=0)


@pytest.fixture
def own_tiny_clip():
    """A private copy of the tiny CLIP, for tests that move a model: VideoFeatureCLIP shares
    the CLIP text modules, so ``model.to(...)`` would move the session fixture's too."""
    from videocoop.clip import TINY_MODEL, load_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(TINY_MODEL, seed=0)


@pytest.fixture
def device():
    return torch.device(TEST_DEVICE)


@pytest.fixture
def classnames():
    return list(CLASSNAMES)
