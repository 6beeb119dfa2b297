"""The JSON rules of jobkit.message, shared by every edge."""
from __future__ import annotations

import pytest

from jobkit.errors import PayloadError
from jobkit.message import loads


def test_loads_reads_utf8_bytes() -> None:
    assert loads('{"k":"é"}'.encode()) == {"k": "é"}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_loads_refuses_bytes_in_other_unicode_encodings(encoding: str) -> None:
    with pytest.raises(PayloadError):
        loads('{"k":"v"}'.encode(encoding))


def test_loads_refuses_invalid_utf8() -> None:
    with pytest.raises(PayloadError, match="UTF-8"):
        loads(b'{"k":"\xff"}')
