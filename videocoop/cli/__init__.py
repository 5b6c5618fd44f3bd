"""The command line: ``videocoop <command>``, a thin layer over the library."""
from .app import ExitCode, UsageError, add_train_arguments, build_parser, config_from_args, main

__all__ = ["ExitCode", "UsageError", "add_train_arguments", "build_parser", "config_from_args", "main"]
