"""One loader for _ota_client_support.py, shared by every OTA client test module and the conftest.

Loaded by path under one module name, so the session's model cache (`session_models`) is shared too.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_NAME = "tinyfleet_tests_ota_client_support"


def ota_client_support() -> ModuleType:
    if _NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).parent / "_ota_client_support.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[_NAME]
