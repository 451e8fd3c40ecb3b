# TEMPORARY (development only): the lead's tests/conftest.py provides asr_addr.
import pytest

from .service import running_asr_service


@pytest.fixture(scope="session")
def asr_addr():
    with running_asr_service() as addr:
        yield addr
