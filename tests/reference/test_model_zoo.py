"""The reference architectures themselves (untrained): realistic primary sizes, decreasing size."""

from __future__ import annotations

import pytest

from converters.reference.model_zoo import recipes

# Input shape and class count of each task (KWS: 49 frames x 20 mel bands; digits: 8 x 8 pixels).
SHAPES = {"kws": ((49, 20, 1), 6), "digits": ((8, 8, 1), 10)}


@pytest.mark.parametrize("task", ["kws", "digits"])
def test_primary_model_has_a_deployed_tinyml_size(task: str) -> None:
    # Hello Edge DS-CNN-S ~24 k, MLPerf Tiny KWS DS-CNN ~38 k parameters: what users deploy.
    shape, n_classes = SHAPES[task]
    primary = recipes(task)[0].build(shape, n_classes)  # type: ignore[arg-type]
    assert 20_000 <= primary.count_params() <= 40_000


@pytest.mark.parametrize("task", ["kws", "digits"])
def test_fallback_models_are_smaller_than_the_primary(task: str) -> None:
    shape, n_classes = SHAPES[task]
    sizes = [r.build(shape, n_classes).count_params() for r in recipes(task)]  # type: ignore[arg-type]
    assert all(size < sizes[0] for size in sizes[1:])


def test_unknown_task_is_named() -> None:
    with pytest.raises(ValueError, match="unknown reference task 'speech'"):
        recipes("speech")  # type: ignore[arg-type]
