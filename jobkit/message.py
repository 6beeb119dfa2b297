"""The wire envelope: one JSON object per broker message, UTF-8, never pickle.

``{"v": 1, "id", "task", "args", "kwargs", "queue", "priority", "ttr",
"max_retries", "enqueued_at"}``. Also the JSON rules every edge shares: no
NaN/Infinity, no NUL characters, no lone surrogates, nesting at most
:data:`MAX_DEPTH` levels.
"""
from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobkit.brokers.base import MAX_PRIORITY
from jobkit.errors import PayloadError, PoisonMessage

VERSION = 1
MAX_DEPTH = 64
#: An envelope wraps each argument in two levels (the object, then ``args`` or ``kwargs``),
#: so an argument may itself nest :data:`MAX_DEPTH` levels.
ENVELOPE_DEPTH = MAX_DEPTH + 2
#: Job ids are URL-safe: letters, digits, ``-`` and ``_``; at most 64 characters.
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
#: Task names (queue names follow the broker's rule: see :func:`jobkit.task.check_queue`).
NAME_RE = re.compile(r"[A-Za-z0-9_.:+/;$()][A-Za-z0-9_.:+/;$()-]{0,199}\Z")

#: UUID version 7: bits 76-79 hold the version (7), bits 62-63 the variant (0b10).
_UUID7_FIXED_BITS = 0x7 << 76 | 0x2 << 62
_UUID7_FREE_BITS = (1 << 128) - 1 & ~(0xF << 76 | 0x3 << 62)
_SURROGATE = re.compile("[\ud800-\udfff]")


def compact_encoder(allow_nan: bool = False) -> Callable[[Any], str]:
    """``json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode``, set up once.

    perf: ``JSONEncoder.encode`` builds its C encoder anew for every value
    (1.5 µs of the 2.3 it takes for an argument list); this builds it once.
    Like ``check_circular=False``, a value that contains itself raises
    RecursionError rather than ValueError.
    """
    python = json.JSONEncoder(ensure_ascii=False, allow_nan=allow_nan, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (another Python): the plain encoder
        return python.encode
    encode = make(None, python.default, json.encoder.encode_basestring, None, ":", ",",
                  False, False, allow_nan)

    def compact(value: Any) -> str:
        return "".join(encode(value, 0))
    return compact


_encode = compact_encoder()


def new_job_id() -> str:
    """Return a fresh job id: 32 hex digits, unique across brokers and restarts.

    The id is a UUID version 7 (RFC 9562): the creation time in milliseconds,
    then 74 random bits. perf: ids of new jobs sort after those of older ones,
    so a database index on the id takes each new one at its right edge, a page
    that is already in memory, instead of at a random page.

    The random bits come from :mod:`random`, which the OS seeds and which a
    forked child reseeds: an id must be unique, not secret (a client that may
    read one job may list them all). perf: no system call, so a request
    thread keeps the GIL (``os.urandom`` gives it up, and waits to get it back
    from the other threads).
    """
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    return f"{value & _UUID7_FREE_BITS | _UUID7_FIXED_BITS:032x}"


def dumps(value: Any, max_depth: int = MAX_DEPTH) -> str:
    """Encode ``value`` as compact JSON text.

    The rules are checked on the encoded text when it can vouch for them (no
    ``\\u0000`` escape, no lone surrogate, fewer brackets than
    :data:`MAX_DEPTH`); only otherwise is the value walked.

    Raises:
        PayloadError: the value is not plain JSON data, or nests too deeply.
    """
    try:
        text = _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        check_shape(value, max_depth)  # its complaint comes first, as if it had walked the value
        raise PayloadError(f"not JSON-serialisable: {exc}") from None
    if not _text_vouches(text, max_depth):
        check_shape(value, max_depth)
    return text


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Decode JSON text, holding it to the rules of this module.

    Raises:
        PayloadError: invalid UTF-8 or JSON, NaN/Infinity, NUL, nesting over MAX_DEPTH.
    """
    try:
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8")  # json.loads would also guess UTF-16 and UTF-32
        value = _decode(data)
    except UnicodeDecodeError:
        raise PayloadError("body is not valid UTF-8") from None
    except RecursionError:
        raise PayloadError(f"JSON nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, or an integer over Python's digit limit
        raise PayloadError(f"malformed JSON: {exc}") from None
    if not _source_vouches(data, max_depth):
        check_shape(value, max_depth)
    return value


def _text_vouches(text: str, max_depth: int) -> bool:
    """True when JSON text we encoded cannot hold a NUL, a lone surrogate or too deep a nesting.

    A NUL is encoded as the escape ``\\u0000``; a lone surrogate stays a
    character of the text (``ensure_ascii=False``), which only non-ASCII text can
    hold; every level of nesting costs a bracket.
    """
    if "\\u0000" in text or text.count("[") + text.count("{") > max_depth:
        return False
    return text.isascii() or not _SURROGATE.search(text)


def _source_vouches(data: bytes | str, max_depth: int) -> bool:
    """True when decoded JSON text cannot hold a NUL, a lone surrogate or too deep a nesting.

    Both can only come from a ``\\u`` escape (strict decoding refuses raw control
    characters; UTF-8 cannot encode surrogates); every level costs a bracket.
    Bytes holding a zero byte may be UTF-16/32, where the escape looks
    different: those are walked.
    """
    if isinstance(data, str):
        return "\\u" not in data and data.count("[") + data.count("{") <= max_depth and (
            data.isascii() or not _SURROGATE.search(data))
    return (b"\\u" not in data and b"\x00" not in data
            and data.count(b"[") + data.count(b"{") <= max_depth)


def check_shape(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Check nesting depth, NUL characters and lone surrogates without recursion.

    Raises:
        PayloadError: the value breaks one of those rules.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, (dict, list, tuple)):
            if depth > max_depth:
                raise PayloadError(f"JSON nests deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key in item:
                    if isinstance(key, str):
                        _check_text(key)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise PayloadError("NUL characters are not allowed in JSON strings")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadError("lone surrogate in JSON string") from None


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode  # perf: one decoder, set up once


@dataclass(frozen=True)
class Envelope:
    """One job as it travels through the broker."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 1024
    ttr: int = 60
    max_retries: int = 0
    enqueued_at: float = 0.0

    def encode(self) -> bytes:
        """Return the message body.

        Raises:
            PayloadError: args or kwargs are not plain JSON data.
        """
        body = {
            "v": VERSION, "id": self.id, "task": self.task, "args": self.args,
            "kwargs": self.kwargs, "queue": self.queue, "priority": self.priority,
            "ttr": self.ttr, "max_retries": self.max_retries, "enqueued_at": self.enqueued_at,
        }
        try:
            return dumps(body, ENVELOPE_DEPTH).encode("utf-8")
        except PayloadError as exc:
            if "nests deeper" in str(exc):
                raise PayloadError(f"an argument nests deeper than {MAX_DEPTH} levels") from None
            raise

    def record(self) -> dict[str, Any]:
        """The job-record fields this envelope knows (see :data:`jobkit.job.RECORD_FIELDS`)."""
        return {"id": self.id, "task": self.task, "args": self.args, "kwargs": self.kwargs,
                "queue": self.queue, "priority": self.priority, "created_at": self.enqueued_at}

    @classmethod
    def decode(cls, body: bytes) -> Envelope:
        """Parse a message body.

        Raises:
            PoisonMessage: the body is not a version-1 jobkit envelope; its
                ``job_id`` attribute holds the id when one could be read.
        """
        try:
            data = loads(body, ENVELOPE_DEPTH)
        except PayloadError as exc:
            raise PoisonMessage(f"undecodable message: {exc}") from None
        if not isinstance(data, dict):
            raise PoisonMessage("message is not a JSON object")
        job_id = data.get("id")
        if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
            raise PoisonMessage("message has no valid job id")
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise PoisonMessage(f"malformed envelope: {exc}", job_id) from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> Envelope:
        if data.get("v") != VERSION:
            raise ValueError(f"unsupported envelope version {data.get('v')!r}")
        env = cls(
            id=data["id"], task=data["task"], args=data.get("args", []),
            kwargs=data.get("kwargs", {}), queue=data.get("queue", "default"),
            priority=data.get("priority", 1024), ttr=data.get("ttr", 60),
            max_retries=data.get("max_retries", 0), enqueued_at=data.get("enqueued_at", 0.0),
        )
        checks = (
            isinstance(env.task, str), isinstance(env.args, list), isinstance(env.kwargs, dict),
            isinstance(env.queue, str), _is_int(env.priority) and env.priority <= MAX_PRIORITY,
            _is_int(env.ttr),
            _is_int(env.max_retries), isinstance(env.enqueued_at, (int, float)),
        )
        if not all(checks):
            raise TypeError("a field has the wrong type or is out of range")
        return env


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

