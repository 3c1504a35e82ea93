"""The fslearn command line: train, evaluate, benchmark, and say what is installed.

    fslearn train protonet --dataset embedded --recipe quick --out runs/protonet
    fslearn eval runs/protonet/checkpoint.pt --n-way 5 --n-shot 1
    fslearn eval-runs runs/protonet/checkpoint.pt --runs all_runs.zip
    fslearn bench --device cuda
    fslearn info

Every command has --help. Errors print one line saying what is wrong and
how to fix it, and exit with status 1 (2 for malformed arguments).
"""

from __future__ import annotations

import sys

from ..distributed import ProcessGroupError
from .arguments import parser
from .support import UsageError

#: What a command raises when the request, the files or another process are wrong, not the
#: code: the message says what and how to fix it. Anything else is a bug and keeps its
#: traceback.
EXPECTED = (UsageError, ValueError, OSError, FloatingPointError, ProcessGroupError)


def one_line(error: BaseException) -> str:
    """The error's message on one line (its lines joined by "; ")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def main(argv=None) -> int:
    """Run the command ``argv`` (default: the process's arguments); return the exit status.

    An expected failure (``EXPECTED``: a FloatingPointError is a diverged run) prints one
    line, ``fslearn COMMAND: error: …``, and returns 1; Ctrl-C returns 130.
    """
    argv = sys.argv[1:] if argv is None else list(map(str, argv))
    args = parser().parse_args(argv)
    args.argv = argv  # the command as typed, for the records that say how they were made
    try:
        return args.run(args)
    except EXPECTED as error:
        print(f"fslearn {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        resume = " (`fslearn train … --resume` continues from the last checkpoint)"
        print(
            f"fslearn {args.command}: interrupted{resume if args.command == 'train' else ''}",
            file=sys.stderr,
        )
        return 130
