"""The ``elastiq`` console script: quiets two import-time notices, then hands over to ``search.cli``.

torchao's CPU wheel logs one warning per CUDA-only extension it cannot load (``_C_mxfp8``, the cutlass
kernels), and torch logs a deprecation when torchao registers an Enum with pytree. Neither says anything
about running elastiq on a CPU, yet both would precede every command's output and bury its one-line
errors. Only the command line mutes them, and only those two loggers, before anything imports torchao:
a library user importing elastiq keeps their own logging untouched.
"""

from __future__ import annotations

import logging

#: Loggers whose import-time warnings are noise on the command line (see the module docstring).
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def main() -> int:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    from search.cli import main as cli_main  # imports torchao: must come after the loggers are set

    return cli_main()


if __name__ == "__main__":  # python -m search.entry, the same as the console script
    raise SystemExit(main())
