"""The command line: ``videocoop <command>``, a thin layer over the library.

- :mod:`.app`: ``build_parser`` and ``main`` (exit codes, messages without tracebacks).
- :mod:`.common`: ``ExitCode``, ``UsageError``, ``CliParser``, the train flags
  (``add_train_arguments``, ``config_from_args``; ``python -m checks`` takes them too).
- one module per subcommand: :mod:`.train`, :mod:`.synth`, :mod:`.pack`, :mod:`.plot`,
  :mod:`.eval`, :mod:`.sweep`, :mod:`.extract`, :mod:`.predict`, :mod:`.synth_videos`;
  each declares a ``COMMAND`` that ``app.COMMANDS`` lists.
"""
from .app import build_parser, main
from .common import CliParser, ExitCode, UsageError, add_train_arguments, config_from_args, print_user_error

__all__ = ["CliParser", "ExitCode", "UsageError", "add_train_arguments", "build_parser", "config_from_args", "main",
           "print_user_error"]
