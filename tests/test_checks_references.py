"""The references the audits hold a model to come from open_clip alone, never from videocoop's own
text path: a bug the model shares with our TextEncoder must still fail."""
import re

import pytest
import torch

from checks import Status, faults, run_audits
from videocoop.model import TextEncoder


def pool_before_eot(self, x, eot, prefix=None):
    """A bug planted in videocoop's own TextEncoder: every pooling reads the token before the EOT."""
    P = 0 if prefix is None else prefix.shape[0]
    return self.ln_final(x[torch.arange(x.shape[0], device=x.device), eot - P - 1])  # [n_cls, width]


@pytest.fixture
def shared_bug(monkeypatch):
    """Our TextEncoder (the model's, and any reference built from it) pools at the same wrong position."""
    monkeypatch.setattr(TextEncoder, "pool_states", pool_before_eot)


@pytest.mark.parametrize("kwargs", [{}, {"text_pool": "mean"}], ids=["eot", "mean"])
def test_a_bug_shared_with_our_text_encoder_fails(shared_bug, kwargs, tiny_clip, classnames):
    (r,) = run_audits(faults.clean(*tiny_clip, classnames, **kwargs), ["text-encoder-parity"])
    assert r.status == Status.FAIL, (r.message, r.evidence)
    assert "differs from encode_text" in r.message


def test_eot_collapse_says_its_fast_reference_equals_encode_text(tiny_clip, classnames):
    (r,) = run_audits(faults.clean(*tiny_clip, classnames), ["eot-collapse"])
    assert r.status == Status.PASS, r.message
    line = next(e for e in r.evidence if e.startswith("encode_text rows:"))
    assert "equal to clip.encode_text at 77 positions on 5 of the prompts" in line


def test_checks_never_builds_a_reference_from_videocoops_text_path():
    """The audits may import the CoOp layout's helpers, never the text path they audit."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "checks"
    for path in root.rglob("*.py"):
        if root / "faults" in path.parents:  # the planted faults are models, built on ours
            continue
        text = path.read_text()
        imports = [line for line in text.splitlines() if re.match(r"\s*(from|import) videocoop", line)]
        assert not [line for line in imports if re.search(r"text_encoder|shared_prefix|TextEncoder|SharedLayout", line)], path
