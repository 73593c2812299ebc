"""``torchrun ... -m _dump_main ARGS``: ``python -m s2dnas ARGS`` that also writes each rank's final weights' digest.

Test-only (it used to be a hook inside the library): ``train_base`` is wrapped so that, after it
returns, every rank writes :func:`_dist_workers.state_digest` of its model to
``$S2DNAS_TEST_DUMP_WEIGHTS/train-base-rank<r>.sha256``; a test then checks that every rank ended
with the same weights as the file rank 0 wrote.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import s2dnas.cli.train_base as cli_train_base
from _dist_workers import state_digest
from s2dnas import distributed
from s2dnas.cli.main import main

DUMP_ENV = "S2DNAS_TEST_DUMP_WEIGHTS"
_train_base = cli_train_base.train_base


def _dumping_train_base(model: Any, *args: Any, **kwargs: Any) -> Any:
    metrics = _train_base(model, *args, **kwargs)
    path = Path(os.environ[DUMP_ENV])
    path.mkdir(parents=True, exist_ok=True)
    rank = distributed.get_info().rank
    (path / f"train-base-rank{rank}.sha256").write_text(state_digest(distributed.unwrap(model).state_dict()) + "\n")
    return metrics


cli_train_base.train_base = _dumping_train_base

if __name__ == "__main__":
    sys.exit(main())
