"""Raw HTTP/1.1 on a socket, for the edge tests: what a misbehaving client sends, and what the server answered."""

from __future__ import annotations

import json
import socket


def read_all(s: socket.socket, ends: type[OSError] | tuple[type[OSError], ...] = ConnectionResetError) -> bytes:
    """Everything until the server closes the connection (a reset after the answer counts as closed; `ends`: the
    errors that count as the end besides, e.g. OSError where a socket timeout ends the wait too)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ends:
        pass
    return out


def answer(raw: bytes) -> tuple[int, dict]:
    """(status, JSON body) of one HTTP/1.1 response that carries a content-length."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    return status, json.loads(body[: int(headers[b"content-length"])])


def openai_error(raw: bytes) -> tuple[int, dict]:
    """(status, the `error` object) of a response that must be an OpenAI error body."""
    status, body = answer(raw)
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], raw[:300]
    return status, error
