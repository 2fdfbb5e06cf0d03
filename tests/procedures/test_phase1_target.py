"""Phase 1 of two-phase SGD (Liu et al. 2020) stops at its own accuracy target or its epoch cap."""

from __future__ import annotations

import pytest
import torch

from study.landscapes.classification import Classification, ClassificationConfig
from study.procedures.sgd_phases import SGDConfig, adversarial_phase, clean_phase, sgd_phase


def test_phase1_stops_at_its_own_target() -> None:
    land = Classification(ClassificationConfig(hidden=16, max_train=20, max_test=10))
    seeds = [0, 1]
    config = SGDConfig(
        init="adversarial", phase1_epochs=200, phase1_target_acc=0.3, adv_copies=2, batch_size=8
    )
    images = land.data.x_train.to(land.dtype)
    phase = adversarial_phase(land, config, seeds, images)
    assert (
        phase.target_acc == 0.3 and clean_phase(land, config, seeds, images).target_acc == config.target_acc
    )
    result = sgd_phase(land, config, land.init(seeds), seeds, phase)
    assert (result.train_acc >= 0.3).all() and (result.epochs < 200).all()
    capped = sgd_phase(
        land,
        SGDConfig(phase1_epochs=2, phase1_target_acc=1.0, adv_copies=2),
        land.init(seeds),
        seeds,
        adversarial_phase(land, SGDConfig(phase1_epochs=2, adv_copies=2), seeds, images),
    )
    assert torch.equal(capped.epochs, torch.full((2,), 2))
    with pytest.raises(ValueError, match="phase1_target_acc"):
        SGDConfig(phase1_target_acc=1.5)
