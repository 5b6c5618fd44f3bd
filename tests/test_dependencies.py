"""pyproject.toml's torch and torchvision ranges: the floor is the oldest release whose API the
code calls, and there is no cap, so pip never downgrades a user's newer torch.

The floor is held to a list of the torch APIs the code needs (each with the release that
added it, from PyTorch's release notes and versioned docs, and the file that calls it: the
list must follow the code). The cap is judged by pip itself: a dry-run install of the
project's requirements into an environment holding a torch newer than ours (fake wheels,
metadata only, no network) must keep that torch.
"""
import base64
import hashlib
import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import torch
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
#: torch API -> (the first release with it, a file of ours that calls it)
FLOOR_APIS = {
    "torch.serialization.safe_globals": ("2.5", "videocoop/utils/readers.py"),
    'torch.amp.GradScaler("cuda")': ("2.3", "videocoop/train/trainer.py"),
    "F.scaled_dot_product_attention": ("2.0", "videocoop/model/shared_prefix.py"),
    "with_kwargs=True": ("2.0", "checks/trace.py"),
    "TorchFunctionMode": ("2.0", "checks/trace.py"),
}
#: each torchvision release is built for exactly one torch release
TORCHVISION_FOR = {"2.0": "0.15", "2.3": "0.18", "2.5": "0.20"}
CAPS = ("<", "<=", "==", "===", "~=")


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps)}


def _floor(req: Requirement) -> str:
    (floor,) = [s.version for s in req.specifier if s.operator == ">="]
    return floor


def test_every_listed_api_is_called_where_the_list_says():
    for api, (_, where) in FLOOR_APIS.items():
        assert api in (ROOT / where).read_text(), f"{where} no longer calls {api}: update FLOOR_APIS and the floor"


def test_the_floors_are_the_newest_api_and_there_is_no_cap():
    reqs = _requirements()
    floor = max((release for release, _ in FLOOR_APIS.values()), key=Version)
    assert _floor(reqs["torch"]) == floor
    assert _floor(reqs["torchvision"]) == TORCHVISION_FOR[floor]
    for name in ("torch", "torchvision"):
        caps = [str(s) for s in reqs[name].specifier if s.operator in CAPS]
        assert not caps, f"{name} is capped ({caps}): pip would downgrade a newer release"
    assert Version(torch.__version__.split("+")[0]) in reqs["torch"].specifier  # ours is admitted


def test_ddp_skips_the_buffer_broadcast_under_either_name(monkeypatch):
    """torch releases before forward_sync_buffers only have broadcast_buffers."""
    from videocoop.train import ddp

    seen = {}

    class New:
        def __init__(self, module, device_ids=None, broadcast_buffers=None, forward_sync_buffers=None):
            seen.update(broadcast_buffers=broadcast_buffers, forward_sync_buffers=forward_sync_buffers)

    class Old:
        def __init__(self, module, device_ids=None, broadcast_buffers=True):
            seen.update(broadcast_buffers=broadcast_buffers, forward_sync_buffers="absent")

    for cls, want in ((New, {"broadcast_buffers": None, "forward_sync_buffers": False}),
                      (Old, {"broadcast_buffers": False, "forward_sync_buffers": "absent"})):
        monkeypatch.setattr(ddp, "DistributedDataParallel", cls)
        ddp.wrap(torch.nn.Linear(1, 1), torch.device("cpu"))
        assert seen == want, cls.__name__


# --------------------------------------------------------------------------- what pip does


def _wheel(folder: Path, name: str, version: str, requires: list[str] = ()) -> None:
    """A wheel holding only its metadata (what a resolver reads)."""
    info = f"{name}-{version}.dist-info"
    files = {f"{info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
                 name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(t.encode())}" for p, t in files.items()]
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "--no-input", *args]
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_CONFIG_FILE": os.devnull}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_pip_keeps_a_newer_torch_already_installed(tmp_path):
    """torch 2.15 (newer than the 2.14.1 we run) is installed; pip is offered 2.14.1 and 2.15.0
    and asked to install the project: it must leave 2.15 alone (the old cap <2.15 made it
    downgrade to 2.14.1, and torchvision with it)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    deps = [str(r) for r in _requirements().values()]
    _wheel(wheels, "videocoop", "0.1.0", deps)
    for torch_version, vision in (("2.14.1", "0.29.1"), ("2.15.0", "0.30.0")):
        _wheel(wheels, "torch", torch_version)
        _wheel(wheels, "torchvision", vision, [f"torch=={torch_version}"])
    for name in ("open_clip_torch", "rich", "numpy", "pillow", "matplotlib", "av"):
        _wheel(wheels, name, "3.3.0" if "3.3.0" in _requirements()[name].specifier else "99.0")
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    index = ["--no-index", "--find-links", str(wheels)]
    done = _pip(python, "install", *index, "torch==2.15.0", "torchvision==0.30.0")
    assert done.returncode == 0, done.stderr
    report = tmp_path / "report.json"
    plan = _pip(python, "install", "--dry-run", "--report", str(report), *index, "videocoop")
    assert plan.returncode == 0, plan.stderr
    installs = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert "videocoop" in installs
    assert "torch" not in installs and "torchvision" not in installs, f"pip would install {installs}"

