"""The house as docs/architecture.md draws it: layers whose imports point down, one definition
of each shared helper, modules a reader can hold in their head."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "videocoop"
#: videocoop's sub-packages, lowest first: a module imports from its own sub-package or lower ones.
LAYERS = ["utils", "clip", "model", "data", "video", "train", "eval", "cli"]
#: One helper per job (issue 17): each of these is defined once in videocoop.
ONE_DEFINITION = ["atomic_write", "write_text", "write_bytes", "read_json_object", "World", "world_from_env",
                  "init_process_group", "resolve_device", "device_for", "Progress", "Bars", "console_handler",
                  "VIDEO_SUFFIXES", "is_video_file", "config_from_dict", "build_model", "seed_hash", "read_manifest",
                  "load_clip", "PROGRESS",
                  # one reader per kind of input (issue 22; docs/inputs.md)
                  "InputError", "read_text", "read_lines", "read_json", "check_fields", "load_array", "load_torch",
                  "load_feature_file", "read_feature_info", "load_checkpoint", "diff_state", "read_metrics",
                  "read_summary", "read_confusion"]
#: The calls that read a file's content; videocoop makes them in its readers only (see below).
RAW_READS = {("np", "load"), ("torch", "load"), ("json", "load"), ("json", "loads"), ("csv", "reader"),
             ("csv", "DictReader"), (None, "read_text"), (None, "read_bytes")}
#: Where they may be made: the shared readers, and the readers built on their text (a metrics
#: line, a manifest's and a class list's CSV).
READER_MODULES = {"utils/readers.py", "train/rundir.py", "data/manifest.py", "data/protocols.py"}
MAX_LINES = 450


def _modules(root: Path):
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _imported_layer(node: ast.ImportFrom, path: Path) -> str | None:
    """The videocoop sub-package an import reaches, or None (outside videocoop, or the same sub-package)."""
    if node.level == 0:
        parts = (node.module or "").split(".")
        return parts[1] if parts[0] == "videocoop" and len(parts) > 1 else None
    if node.level == 2 and path.parent.parent == PACKAGE:
        return (node.module or "").split(".")[0] or None
    assert node.level == 1, f"{path}: import three levels up"
    return None


@pytest.mark.parametrize("path", _modules(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    rel = path.relative_to(PACKAGE).parts
    if len(rel) == 1:  # videocoop/__init__ and __main__ sit above every layer
        return
    mine = LAYERS.index(rel[0])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            layer = _imported_layer(node, path)
            if layer in LAYERS:
                assert LAYERS.index(layer) <= mine, f"{path.relative_to(ROOT)}:{node.lineno}: {rel[0]} imports {layer}"


def test_every_subpackage_is_a_layer():
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert found == set(LAYERS)


def test_one_definition_of_each_shared_helper():
    where: dict[str, list[str]] = {name: [] for name in ONE_DEFINITION}
    for path in _modules(PACKAGE):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            for name in names:
                if name in where:
                    where[name].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert {n: w for n, w in where.items() if len(w) != 1} == {}


@pytest.mark.parametrize("package", ["videocoop", "checks"])
def test_no_module_over_450_lines(package):
    long = {str(p.relative_to(ROOT)): n for p in _modules(ROOT / package)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_file_is_read_through_a_reader():
    """A file's content is read in the readers only (videocoop.utils.readers and those built on
    it), so every command refuses a bad file the same way: encoding, type, shape, range."""
    found = []
    for path in _modules(PACKAGE):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in READER_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
                if (owner, node.func.attr) in RAW_READS or (None, node.func.attr) in RAW_READS:
                    found.append(f"{rel}:{node.lineno}: {owner or '...'}.{node.func.attr}")
    assert found == []
