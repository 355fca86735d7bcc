"""Parse request parameters like PHP does: query + form/JSON/multipart body, bracket keys into nested structures."""

import json
import re
from collections.abc import Iterable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


class BadRequest(ValueError):
    """The body could not be parsed."""


def parse_bracket_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Build nested dicts from `a[b][]=x` style pairs; dicts keyed 0..n-1 become lists (as PHP arrays would)."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        head, _, rest = raw_key.partition("[")
        if not head:
            continue
        path = [head, *_BRACKETS.findall("[" + rest)] if rest else [head]
        node = root
        for i, part in enumerate(path):
            if part == "":
                part = str(_next_index(node))
            if i == len(path) - 1:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return _listify(root)


def _next_index(node: dict[str, Any]) -> int:
    numbers = [int(k) for k in node if k.isdigit()]
    return max(numbers) + 1 if numbers else 0


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {k: _listify(v) for k, v in value.items()}
        if converted and list(converted) == [str(i) for i in range(len(converted))]:
            return list(converted.values())
        return converted
    return value


def parse_query(query: str) -> dict[str, Any]:
    """Parse an urlencoded string with bracket keys."""
    return parse_bracket_pairs(parse_qsl(query, keep_blank_values=True))


def parse_request(query: str, content_type: str, body: bytes) -> dict[str, Any]:
    """Merge query and body parameters; top-level keys are case-insensitive in Bitrix (FIELDS = fields)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    mime = content_type.split(";")[0].strip().lower()
    data: Any = {}
    if body and mime == "application/json":
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"Invalid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise BadRequest("JSON body must be an object")
    elif body and mime == "multipart/form-data":
        pairs += _multipart_pairs(content_type, body)
    elif body:
        pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    params = parse_bracket_pairs((_lower_head(k), v) for k, v in pairs)
    params.update({str(k).lower(): v for k, v in data.items()})
    return params


def _lower_head(key: str) -> str:
    head, bracket, rest = key.partition("[")
    return head.lower() + bracket + rest


def _multipart_pairs(content_type: str, body: bytes) -> list[tuple[str, str]]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    pairs = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True) or b""
            pairs.append((str(name), payload.decode("utf-8", "replace")))
    return pairs
