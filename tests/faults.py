"""The planted faults live in :mod:`checks.faults` (product code: ``python -m checks --selftest``
runs them); this module keeps ``import faults`` and ``--target tests.faults:NAME`` working."""
from checks.faults import *  # noqa: F401,F403
from checks.faults import NAMES, SEED, seeded  # noqa: F401  (named: the contract)
