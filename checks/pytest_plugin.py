"""The audits inside pytest: one test item per audit of ``--audit-target``, and an ``audit`` fixture.

Registered through the ``pytest11`` entry point (``videocoop-audits``), so it is active once
videocoop is installed. Unless ``--audit-target`` is given it only adds its options, the
``audit`` marker and the fixture, and imports nothing heavy (no torch)::

    pytest --audit-target mypkg.targets:make_target [--audit-only IDS]
           [--audit-device cpu|cuda] [--audit-report PATH] [--audit-spawn]

Each audit is one item ``<target>::<audit id>`` (``-k eot-collapse``, ``--deselect
mypkg.targets:make_target::host-sync``, ``-m audit``): FAIL and ERROR fail with the finding
and its evidence, WARN passes with an :class:`AuditWarning` carrying the finding, SKIP skips
with the reason. The first item that runs builds the target and runs every selected audit
once (as ``python -m checks --only`` would); the other items read their result from there.
"""
from __future__ import annotations

import shlex
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest

#: ``--audit-device`` choices; checks.core.AUDIT_DEVICES (not imported here: it pulls in torch).
DEVICES = ("cpu", "cuda")


class AuditWarning(UserWarning):
    """An audit's WARN: not a correctness problem, but it costs speed or class separation."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("audits", "videocoop audits (checks): one test per audit of a target")
    group.addoption("--audit-target", metavar="PKG.MODULE:FACTORY", default=None,
                    help="audit the model FACTORY() returns (a checks.AuditTarget or a bare model): one test "
                         "per audit, named by its id")
    group.addoption("--audit-only", metavar="IDS", default=None,
                    help="comma-separated audit ids (default: all; python -m checks --list names them)")
    group.addoption("--audit-device", choices=DEVICES, default=None,
                    help="where the device audits move the model: cuda (refused without CUDA), or cpu (the meta "
                         "device stands in); default: cuda when present. Also the audit fixture's default")
    group.addoption("--audit-spawn", action="store_true", default=False,
                    help="also run the audits that start processes (distributed-equivalence: gloo on the CPU)")
    group.addoption("--audit-report", metavar="PATH", default=None,
                    help="write the markdown report of the audits that ran, once, at the end of the session")


@dataclass
class _Session:
    """One session's audits: what was asked, and the results once the first item ran them."""

    spec: str
    ids: list[str]
    device: str | None
    report: str | None
    command: str
    spawn: bool = False
    results: dict[str, Any] | None = None  # audit id -> CheckResult
    error: str | None = None  # why the target could not be built
    target: Any = None
    seconds: float = 0.0
    written: list[str] = field(default_factory=list)

    def result(self, audit_id: str, session: pytest.Session):
        if self.results is None and self.error is None:
            self._run([i.name for i in session.items if isinstance(i, AuditItem)])
        if self.error is not None:
            pytest.fail(self.error, pytrace=False)
        return self.results[audit_id]

    def _run(self, ids: list[str]) -> None:
        from videocoop import VideoCoopError

        from .runner import run_audits

        start = time.perf_counter()
        try:
            self.target = build_target(self.spec)
        except VideoCoopError as e:
            self.error = str(e)
            return
        self.results = {r.id: r for r in run_audits(self.target, ids, device=self.device, spawn=self.spawn)}
        self.seconds = time.perf_counter() - start


_STATE = pytest.StashKey[_Session]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "audit: one audit of --audit-target (videocoop's checks.pytest_plugin)")
    spec, device = config.getoption("audit_target"), config.getoption("audit_device")
    if spec is None:
        given = [f"--audit-{n}" for n in ("only", "report") if config.getoption(f"audit_{n}") is not None]
        if given:
            raise pytest.UsageError(f"{' and '.join(given)} need --audit-target PKG.MODULE:FACTORY (the model to audit)")
        if device is None:
            return  # not asked: nothing to import, nothing to run
    elif not all(spec.partition(":")[::2]):
        raise pytest.UsageError(f"--audit-target must look like pkg.module:factory, got {spec!r}")
    from videocoop import VideoCoopError

    from .core import get_audit, list_audits, resolve_device

    only = config.getoption("audit_only")
    ids = [i.strip() for i in only.split(",") if i.strip()] if only else list_audits()
    # --audit-device alone sets the audit fixture's default: cuda without CUDA is refused up front
    for flag, check in (("--audit-device", lambda: resolve_device(device)),
                        ("--audit-only", lambda: [get_audit(i) for i in ids])):
        try:
            check()
        except VideoCoopError as e:
            raise pytest.UsageError(f"{flag}: {e}") from None
    if spec is not None:
        order = list_audits()
        config.stash[_STATE] = _Session(spec, sorted(set(ids), key=order.index), device,
                                        config.getoption("audit_report"),
                                        "pytest " + shlex.join(config.invocation_params.args),
                                        config.getoption("audit_spawn"))


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return None
    return f"audits: {state.spec}, {len(state.ids)} audit(s), device {state.device or 'cuda when present, else cpu'}"


class AuditTargetNode(pytest.Collector):
    """The audited target: its items are its audits."""

    def collect(self):
        return [AuditItem.from_parent(self, name=i) for i in self.config.stash[_STATE].ids]


class AuditItem(pytest.Item):
    """One audit of the session's target; its name is the audit id."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_marker("audit")

    def runtest(self) -> None:
        from .core import Status

        r = self.config.stash[_STATE].result(self.name, self.session)
        self.user_properties += [("audit_status", r.status.value), ("audit_seconds", r.duration)]
        if r.status.failed:
            pytest.fail(describe(r), pytrace=False)
        if r.status == Status.SKIP:
            pytest.skip(f"{r.id}: {r.message}")
        if r.status == Status.WARN:
            _warn(r)

    def reportinfo(self):
        return self.path, None, self.name


@pytest.hookimpl(tryfirst=True)  # before -k, -m and --deselect filter the items
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    node = AuditTargetNode.from_parent(session, name=state.spec, nodeid=state.spec)
    # reported like any collected node, so "collected N items / M deselected" counts the audits
    node.ihook.pytest_collectstart(collector=node)
    report = node.ihook.pytest_make_collect_report(collector=node)
    node.ihook.pytest_collectreport(report=report)
    items.extend(x for x in report.result if isinstance(x, pytest.Item))


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is None or not state.report or not state.results:
        return
    from .cli import run_info, write_report

    results = list(state.results.values())
    write_report(results, run_info(state.target, state.command, state.seconds, state.device), state.report)
    state.written.append(state.report)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.written:
        terminalreporter.write_sep("-", f"audit report: {', '.join(state.written)}")


def build_target(spec: str):
    """The :class:`~checks.AuditTarget` ``pkg.module:factory`` returns (random-weight warnings
    silenced: the report states the weights)."""
    from videocoop.clip import UntrainedModelWarning

    from .cli import load_target

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        return load_target(spec)


def describe(result) -> str:
    """A FAIL or ERROR as a test failure: the finding, where, the evidence, the remedy."""
    lines = [f"{result.id} {result.status.value.upper()}: {result.message}"]
    if result.location:
        lines.append(f"  location: {result.location}")
    if result.evidence:
        lines += ["  evidence:", *(f"    {e}" for e in result.evidence)]
    lines.append(f"  if it fails: {result.remediation}")
    return "\n".join(lines)


def _warn(result) -> None:
    """The WARN as an AuditWarning, attributed to the code the audit found when it names a line."""
    message = f"{result.id}: {result.message}"
    path, _, line = (result.location or "").rpartition(":")
    if path and line.isdigit():
        warnings.warn_explicit(message, AuditWarning, path, int(line))
    else:
        warnings.warn(message, AuditWarning, stacklevel=2)


@pytest.fixture
def audit(request: pytest.FixtureRequest):
    """Run audits from a hand-written test: ``audit(target, ids=None, device=None)`` returns the
    list of :class:`~checks.CheckResult`.

    ``target`` is a :class:`~checks.AuditTarget`, a bare model, or ``"pkg.module:factory"``;
    ``ids`` a list or a comma-separated string (None: all); ``device`` as ``--audit-device``
    (None: that option, else CUDA when present). Judge the results with
    :func:`assert_audits_pass`.
    """
    default_device = request.config.getoption("audit_device")

    def run(target, ids=None, device=None):
        from .runner import run_audits

        if isinstance(target, str):
            target = build_target(target)
        if isinstance(ids, str):
            ids = [i.strip() for i in ids.split(",") if i.strip()]
        return run_audits(target, ids, device=device or default_device)

    return run


def assert_audits_pass(results) -> None:
    """Fail the calling test when any audit FAILed or ERRORed, listing each with its evidence.

    WARN and SKIP pass (as ``python -m checks`` exits 0 on them); an empty list fails, since
    no audit ran.
    """
    __tracebackhide__ = True
    results = list(results)
    if not results:
        pytest.fail("no audit ran: an empty list of results proves nothing")
    failed = [r for r in results if r.status.failed]
    if failed:
        pytest.fail(f"{len(failed)} of {len(results)} audit(s) failed:\n" + "\n".join(describe(r) for r in failed))
