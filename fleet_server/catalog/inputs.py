"""Reading calibration and evaluation arrays from .npy / .npz files.

Shared by ``tinyfleet model convert`` (local files) and the conversion job (uploaded files), so both
accept the same layouts and say the same thing about a bad file. ``allow_pickle=False`` always: an
uploaded file must never run code in the server or the worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALIBRATION_KEYS = ("x", "calibration")


class InputFileError(ValueError):
    """A data file is missing or does not hold what it should; the message names the file and problem."""


def load_array(path: Path, what: str, npz_keys: tuple[str, ...]) -> np.ndarray:
    """One array from a .npy file, or from an .npz by the first of ``npz_keys`` present (or its only key)."""
    if not path.is_file():
        raise InputFileError(f"{what} file {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputFileError(f"{what} file {path} is not a .npy/.npz file: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        keys = list(loaded.keys())
        try:
            for key in npz_keys:
                if key in keys:
                    return loaded[key]
            if len(keys) == 1:
                return loaded[keys[0]]
        except Exception as exc:  # a member that is not a valid array (truncated, pickled object)
            raise InputFileError(f"{what} file {path} holds an unreadable array: {exc}") from exc
        raise InputFileError(f"{what} file {path} has keys {keys}; expected one of {list(npz_keys)}")


def load_evaluation(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels from an .npz with arrays ``x`` and ``y``."""
    if not path.is_file():
        raise InputFileError(f"evaluation file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "keys") or "x" not in data or "y" not in data:
                raise InputFileError(f"evaluation file {path} must be an .npz with arrays 'x' and 'y'")
            return data["x"], data["y"]
    except InputFileError:
        raise
    except Exception as exc:
        raise InputFileError(f"evaluation file {path} is not an .npz file: {exc}") from exc


def eval_arrays(
    eval_npz: Path | None, eval_x: Path | None, eval_y: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation data from either one .npz (x, y) or two .npy files; exactly one of the two forms."""
    if eval_npz is not None:
        if eval_x is not None or eval_y is not None:
            raise InputFileError("give either --eval or --eval-x/--eval-y, not both")
        return load_evaluation(eval_npz)
    if eval_x is None or eval_y is None:
        raise InputFileError("evaluation data missing: give --eval FILE.npz or both --eval-x and --eval-y")
    return load_array(eval_x, "evaluation inputs", ("x",)), load_array(eval_y, "evaluation labels", ("y",))
