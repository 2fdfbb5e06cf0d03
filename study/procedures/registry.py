"""The registry that names training procedures: a new procedure is one module plus one entry here."""

from __future__ import annotations

from study.procedures import descent, two_phase_sgd
from study.procedures.base import Procedure
from study.training.gd import TrainConfig

PROCEDURES: dict[str, Procedure] = {
    "descent": Procedure(
        "descent",
        TrainConfig,
        descent.run,
        "batched gradient descent with restarts and a Newton finish",
        descent.COLUMNS,
    ),
    "two_phase_sgd": Procedure(
        "two_phase_sgd",
        two_phase_sgd.SGDConfig,
        two_phase_sgd.run,
        "adversarial init, then SGD (L5)",
        two_phase_sgd.COLUMNS,
    ),
}


def procedure(name: str) -> Procedure:
    """The named procedure; ValueError names the known ones."""
    if name not in PROCEDURES:
        raise ValueError(f"procedure: unknown procedure {name!r}; known: {sorted(PROCEDURES)}")
    return PROCEDURES[name]
