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

from .arguments import parser
from .support import UsageError


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(map(str, argv))
    args = parser().parse_args(argv)
    args.argv = argv  # the command as typed, for the records that say how they were made
    try:
        return args.run(args)
    except (
        UsageError,
        ValueError,
        OSError,
        FloatingPointError,
    ) as error:  # OSError: files, downloads
        print(f"fslearn {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"fslearn {args.command}: interrupted; `fslearn train … --resume` continues from the "
            "last checkpoint",
            file=sys.stderr,
        )
        return 130
