import json
import os
import pathlib
import random

import numpy as np
import pytest
import torch

GOLDEN_DIR = pathlib.Path(__file__).resolve().parents[1] / "data" / "golden" / "head_groups"


@pytest.fixture
def seed(request):
    """A fresh seed per test (DILATED_TEST_SEED pins one); printed when the test fails."""
    value = int(os.environ.get("DILATED_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    request.node.user_properties.append(("seed", value))
    return value


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("seed", f"DILATED_TEST_SEED={value} reproduces this run"))


def golden_cases():
    return sorted(p.name for p in GOLDEN_DIR.iterdir() if (p / "case.json").exists())


def load_golden(name):
    folder = GOLDEN_DIR / name
    case = json.loads((folder / "case.json").read_text())
    arrays = {f.stem: torch.from_numpy(np.load(f)) for f in folder.glob("*.npy")}
    return case, arrays


def relative_error(actual, expected):
    """max |actual - expected| / max |expected|, in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def randn(*shape, dtype=torch.float32, device="cpu", requires_grad=False):
    x = torch.randn(*shape, dtype=torch.float32, device=device).to(dtype)
    return x.requires_grad_(requires_grad)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
