"""The ASR service's own modules, imported from its source folder.

The test venv does not install the service (faster-whisper, torch), but a few
of its modules need only the standard library and grpc, so tests that check
them on their own import them from ``asr-service/`` under their real names;
relative imports inside the package work as in the service.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from scripts.stack import REPO

PACKAGE = REPO / "asr-service" / "asr_service"


def service_module(name: str) -> ModuleType:
    """``asr_service.<name>``, the package itself loaded by path on first use."""
    if "asr_service" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "asr_service", PACKAGE / "__init__.py", submodule_search_locations=[str(PACKAGE)])
        package = importlib.util.module_from_spec(spec)
        sys.modules["asr_service"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"asr_service.{name}")
