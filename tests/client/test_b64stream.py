"""The streaming base64-in-JSON codec, without any HTTP."""

from __future__ import annotations

import base64
import io
import json
import random

import pytest

from kbfs.client.b64stream import (
    Base64FormatError,
    JsonBase64Decoder,
    NotStreamable,
    decode_whole,
    encoded_length,
    find_result_string,
    iter_base64,
)


def _split(data: bytes, rng: random.Random, max_piece: int = 17) -> list[bytes]:
    pieces = []
    i = 0
    while i < len(data):
        n = rng.randint(1, max_piece)
        pieces.append(data[i : i + n])
        i += n
    return pieces


def _stream_decode(body: bytes, pieces: list[bytes]) -> tuple[bytes, bytes, bytes]:
    """Run the same algorithm as the transport: find the start, feed the rest."""
    head = b""
    dec: JsonBase64Decoder | None = None
    out = b""
    for piece in pieces:
        if dec is None:
            head += piece
            start = find_result_string(head)
            if start is None:
                continue
            piece = head[start:]
            head = head[:start]
            dec = JsonBase64Decoder()
        out += dec.feed(piece)
    assert dec is not None
    out += dec.finish()
    return head, out, dec.tail


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 63, 64, 65, 1000, 4097])
@pytest.mark.parametrize("style", ["plain", "escaped_slashes", "wrapped", "unicode_escapes"])
def test_decode_random_splits(size: int, style: str) -> None:
    rng = random.Random(size * 31 + len(style))
    raw = bytes(rng.getrandbits(8) for _ in range(size))
    b64 = base64.b64encode(raw).decode()
    if style == "escaped_slashes":
        text = b64.replace("/", "\\/")
    elif style == "wrapped":
        text = "\\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    elif style == "unicode_escapes":
        text = b64.replace("/", "\\u002F").replace("+", "\\u002b")
    else:
        text = b64
    body = ('{"jsonrpc": "2.0", "result" : "' + text + '", "id": 7}').encode()
    for trial in range(5):
        pieces = _split(body, random.Random(trial), max_piece=1 if trial == 0 else 23)
        head, out, tail = _stream_decode(body, pieces)
        assert out == raw
        env = json.loads(head + b'"' + tail)
        assert env == {"jsonrpc": "2.0", "result": "", "id": 7}


def test_result_key_inside_other_strings_is_ignored() -> None:
    body = b'{"jsonrpc":"2.0","note":"\\"result\\":\\"x","id":1,"result":"QUJD"}'
    start = find_result_string(body)
    assert start is not None
    assert body[start:].startswith(b'QUJD"')


def test_result_after_nested_values() -> None:
    body = b'{"id":1,"meta":{"a":[1,{"result":"no"}],"b":"}"},"result":"QUJD"}'
    start = find_result_string(body)
    assert start is not None and body[start : start + 4] == b"QUJD"


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","result":false,"id":1}',
        b'{"jsonrpc":"2.0","error":{"code":1,"message":"x"},"id":1}',
        b"<html>oops</html>",
        b'[{"result":"QUJD"}]',
        b'{"jsonrpc":"2.0","id":1}',
    ],
)
def test_not_streamable(body: bytes) -> None:
    with pytest.raises(NotStreamable):
        find_result_string(body)


def test_needs_more_data() -> None:
    assert find_result_string(b"") is None
    assert find_result_string(b'{"jsonrpc":"2.') is None
    assert find_result_string(b'{"jsonrpc":"2.0","res') is None
    assert find_result_string(b'{"jsonrpc":"2.0","result" :  ') is None


def test_escape_split_across_chunks() -> None:
    dec = JsonBase64Decoder()
    out = dec.feed(b"QUJD\\")  # ends with half of "\/"
    assert out == b"ABC"
    out += dec.feed(b"/")
    out += dec.feed(b'//w"')
    assert dec.done
    out += dec.finish()
    assert out == b"ABC" + base64.b64decode("///w")


def test_escaped_backslash_then_quote_terminates() -> None:
    dec = JsonBase64Decoder()
    with pytest.raises(Base64FormatError):  # "\\" decodes to a backslash: not base64
        dec.feed(b'QUJD\\\\"')
        assert dec.done
        dec.finish()


def test_escaped_quote_does_not_terminate() -> None:
    dec = JsonBase64Decoder()
    with pytest.raises(Base64FormatError):
        dec.feed(b'QUJ\\"D"')
    dec = JsonBase64Decoder()
    dec.feed(b"QUJ\\")
    assert not dec.done


def test_invalid_base64_is_an_error() -> None:
    dec = JsonBase64Decoder()
    with pytest.raises(Base64FormatError):
        dec.feed(b'QU!D"')


def test_padding_in_the_middle_is_an_error() -> None:
    dec = JsonBase64Decoder()
    with pytest.raises(Base64FormatError):
        dec.feed(b'QQ==QUJD"')


def test_missing_padding_is_tolerated() -> None:
    dec = JsonBase64Decoder()
    out = dec.feed(b'SGVsbG8"')
    assert out + dec.finish() == b"Hello"


def test_unterminated() -> None:
    dec = JsonBase64Decoder()
    dec.feed(b"QUJD")
    with pytest.raises(Base64FormatError):
        dec.finish()


def test_decode_whole() -> None:
    assert decode_whole("SGVsbG8=") == b"Hello"
    assert decode_whole("SGVs\nbG8") == b"Hello"
    with pytest.raises(Base64FormatError):
        decode_whole("é")


@pytest.mark.parametrize("size", [0, 1, 2, 3, 10, 3 * 7, 3 * 7 + 1, 100])
def test_iter_base64(size: int) -> None:
    raw = bytes(range(256)) * (size // 256 + 1)
    raw = raw[:size]
    pieces = [step() for step in iter_base64(io.BytesIO(raw + b"extra"), size, chunk=21)]
    joined = b"".join(pieces)
    assert len(joined) == encoded_length(size)
    assert base64.b64decode(joined) == raw


def test_iter_base64_short_source() -> None:
    with pytest.raises(EOFError):
        for step in iter_base64(io.BytesIO(b"abc"), 10, chunk=3):
            step()
