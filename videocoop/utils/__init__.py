"""The small shared helpers every layer may use, and that use nothing of videocoop above them.

- :mod:`.errors`: ``VideoCoopError``, the one user-facing exception.
- :mod:`.files`: the one atomic writer and the safe readers of small files.
- :mod:`.progress`: the one progress and logging path (bars, console and file handlers).
- :mod:`.distributed`: the one process-group wrapper (``World``) and the one device picker.
- :mod:`.seeding`: seeds that are the same in every process.
- :mod:`.config`: the one way a config dataclass is built from a dict (unknown keys refused).
"""
