"""The small shared helpers every layer may use, and that use nothing of videocoop above them.

- :mod:`.errors`: ``VideoCoopError``, the user-facing exception, and ``InputError``, its kind for a bad file.
- :mod:`.files`: the one atomic writer.
- :mod:`.readers`: the readers every layer shares: text (UTF-8 only), JSON records with typed
  fields, ``.npy`` and ``.pt`` files (never unpickled).
- :mod:`.progress`: the one progress and logging path (bars, console and file handlers).
- :mod:`.distributed`: the one process-group wrapper (``World``) and the one device picker.
- :mod:`.seeding`: seeds that are the same in every process.
- :mod:`.config`: the one way a config dataclass is built from a dict (unknown keys refused).
"""
from .errors import InputError, VideoCoopError
from .readers import read_json, read_json_object, read_lines, read_text

__all__ = ["InputError", "VideoCoopError", "read_json", "read_json_object", "read_lines", "read_text"]
