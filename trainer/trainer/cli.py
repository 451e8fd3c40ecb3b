"""`python -m trainer --config FILE [--key value ...]`.

Exit status: 0 done (the adapter is in place), 2 the configuration is wrong,
1 the data or the run failed, 143 stopped by SIGTERM. On any failure no
adapter folder is left in place; checkpoints stay in the run folder for --resume.
"""

from __future__ import annotations

import logging
import signal
import sys

import yaml

from trainer import argparsing, gpus
from trainer.config import ConfigError, validate

log = logging.getLogger("trainer")


def _stop(signum: int, _frame: object) -> None:
    # `docker stop` sends SIGTERM: unwind through the `finally` blocks that
    # remove the temporary adapter folder, instead of dying mid-write.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config, action = argparsing.parse_with_action(argv)
        if config is not None:
            validate(config)
    except ConfigError as error:
        print(f"trainer: error: {error}", file=sys.stderr)
        return 2
    if config is None:  # --help
        return 0
    if action == "print_config":
        print(yaml.safe_dump(config.as_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    logging.basicConfig(
        level=config.run.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    signal.signal(signal.SIGTERM, _stop)
    gpus.keep_one_gpu_without_launcher()  # before torch is imported

    from trainer.data import DataError
    from trainer.output import OutputNotWritable
    from trainer.train import run

    try:
        run(config)
    except ConfigError as error:
        print(f"trainer: error: {error}", file=sys.stderr)
        return 2
    except (DataError, FileExistsError, FileNotFoundError, OutputNotWritable) as error:
        print(f"trainer: error: {error}", file=sys.stderr)
        return 1
    return 0
