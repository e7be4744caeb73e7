"""Calibrated int8 for a loaded scorer: its pairs become batches, the exported backend quantizes and gates them
(:mod:`haystack_crossrerank.exported.int8`), and a passing int8 copy replaces the scorer's model where int8 was
asked for. `CrossEncoderScorer.calibrate_int8` is the public entry point."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from haystack_crossrerank import exported
from haystack_crossrerank.exported.distil import DistilSettings, DistilStats
from haystack_crossrerank.exported.int8 import Int8Report
from haystack_crossrerank.ranking.pair_encoding import check_pairs
from haystack_crossrerank.utils.checks import check_int

if TYPE_CHECKING:
    from haystack_crossrerank.ranking.scoring import CrossEncoderScorer


def calibrate_scorer_int8(
    scorer: CrossEncoderScorer,
    calibration_pairs: Sequence[tuple[str, str]],
    held_pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 16,
    distil_pairs: Sequence[tuple[str, str]] | None = None,
    distil_settings: DistilSettings | None = None,
    distil_batch_size: int = 8,
    show_progress: bool = True,
) -> Int8Report:
    """
    Make the calibrated int8 copy of `scorer`'s exported model: see
    :meth:`haystack_crossrerank.ranking.scoring.CrossEncoderScorer.calibrate_int8`, which calls this with the same
    parameters.

    :param scorer: A scorer on backend `"onnx"` or `"openvino"` (`"auto"` where it resolves to one).
    :param calibration_pairs: In-domain pairs whose activations set the int8 scales.
    :param held_pairs: Other pairs for the gate.
    :param batch_size: Pairs per calibration batch.
    :param distil_pairs: OpenVINO only: pairs to distil the int8 model on, or `None`.
    :param distil_settings: The distillation's settings.
    :param distil_batch_size: Pairs per distillation step.
    :param show_progress: Show a bar over the distillation's steps.
    :returns: The report, also stored beside the export.
    :raises ValueError: As :meth:`CrossEncoderScorer.calibrate_int8` says.
    """

    def refuse_torch() -> None:
        if scorer.backend == "torch":
            raise ValueError(
                "calibrate_int8 needs backend 'onnx' or 'openvino', but this scorer's backend is 'torch'"
                + (" ('auto' resolved to it here)" if scorer.requested_backend == "auto" else "")
            )

    refuse_torch()
    check_pairs(calibration_pairs)
    check_pairs(held_pairs)
    if not calibration_pairs or not held_pairs:
        raise ValueError(
            f"calibrate_int8 needs calibration and held-out pairs, but got {len(calibration_pairs)} and "
            f"{len(held_pairs)}"
        )
    check_int("distil_batch_size", distil_batch_size, minimum=1)
    if distil_pairs is not None:
        check_pairs(distil_pairs)
        if not distil_pairs:
            raise ValueError("calibrate_int8 got distil_pairs=[]: pass in-domain pairs, or None not to distil")
    scorer.load()
    refuse_torch()
    assert scorer.export_folder is not None
    distil = None
    if distil_pairs is not None:
        if scorer.backend != "openvino":
            raise ValueError(
                f"int8 distillation makes OpenVINO models, but this scorer's backend is {scorer.backend!r}: "
                "pass backend='openvino', or no distil_pairs"
            )
        from haystack_crossrerank.exported.distil import distil_openvino_int8

        load_weights = scorer._load_weights
        assert load_weights is not None
        train = [features for _, features in scorer._batches(distil_pairs, distil_batch_size, scorer.max_length)]

        def distil(target: Path, calibration: list[dict[str, np.ndarray]]) -> DistilStats:
            return distil_openvino_int8(
                load_weights, target, calibration, train, settings=distil_settings, show_progress=show_progress
            )

    calibration = [features for _, features in scorer._batches(calibration_pairs, batch_size, scorer.max_length)]
    held = list(scorer._batches(held_pairs, scorer.batch_size, scorer.max_length))
    report = exported.calibrate_int8(
        scorer.export_folder,
        scorer.backend,
        calibration,
        held,
        counts=(len(calibration_pairs), len(held_pairs), exported.pairs_digest(calibration_pairs)),
        distil=distil,
    )
    scorer.int8_report = report
    if report.passed and scorer.requested_precision == "int8":
        path = exported.int8_path(scorer.export_folder, scorer.backend)
        scorer.model = exported.RuntimeSession(scorer.backend, path, precision="int8")
        scorer.precision = "int8"
    return report
