"""DynamoDB Streams: Amplify's DynamoDB trigger template, in Python.

Logs each change's event id and event name, and the item's keys and its
new and old images unmarshalled from DynamoDB JSON into plain JSON (what
the template does with `AWS.DynamoDB.Converter.unmarshall`). Reports no
failure; an image that is not DynamoDB JSON fails the batch, naming the
attribute.

It gives the same answers and writes the same log lines as the Rust
`dynamodb-stream-logger`: `unmarshall` follows the Rust SDK's rules, and
`to_json` prints JSON as serde_json does (no spaces, keys in their order,
non-ASCII as is, floats laid out as Rust lays them out).
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.dynamodb_stream import DynamodbRecord
from wit_world.imports import log


def info(message: str) -> None:
    log.write(log.Level.INFO, message)


class DynamodbStream(exports.DynamodbStream):
    def handle(self, records: list[DynamodbRecord]) -> list[str]:
        for record in records:
            info(record.event_id)
            # INSERT, MODIFY or REMOVE, as DynamoDB writes it.
            info(record.event_name.name)
            stream = record.dynamodb
            change = {
                "keys": unmarshall(stream.keys),
                "new": image(stream.new_image),
                "old": image(stream.old_image),
            }
            info("DynamoDB Record: " + to_json(change))
        return []


def image(text: str | None):
    """An image as plain JSON; None when the stream's view leaves it out."""
    return None if text is None else unmarshall(text)


# ---- DynamoDB JSON to plain JSON --------------------------------------


class NotDynamoDbJson(Exception):
    pass


def unmarshall(text: str):
    """Reads an item in DynamoDB JSON (`{"Id":{"N":"101"}}`) as plain JSON
    (`{"Id": 101}`). `S` is a string, `N` a number (an int when it is one),
    `B` its base64 text, `BOOL` and `NULL` themselves, `M` an object, `L` a
    list, and the sets `SS`, `NS`, `BS` lists. Raises `Err` naming the
    attribute that is not DynamoDB JSON, which fails the batch."""
    try:
        item = json.loads(text, parse_constant=_no_constant)
    except ValueError as e:
        raise Err(f"the item is not JSON: {e}")
    if not isinstance(item, dict):
        raise Err("the item must be a JSON object of attributes")
    try:
        return _attributes(item, "")
    except NotDynamoDbJson as e:
        raise Err(str(e))


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _attributes(attributes: dict, path: str) -> dict:
    return {
        name: _attribute(value, name if not path else f"{path}.{name}")
        for name, value in attributes.items()
    }


def _attribute(value, path: str):
    def bad(what: str) -> NotDynamoDbJson:
        return NotDynamoDbJson(f"attribute `{path}`: {what}")

    if not isinstance(value, dict):
        raise bad('expected an object such as {"S": "..."}')
    if len(value) != 1:
        raise bad("expected exactly one type key")
    ((kind, inner),) = value.items()

    def strings() -> list:
        if not isinstance(inner, list):
            raise bad(f"{kind} must be an array")
        for item in inner:
            if not isinstance(item, str):
                raise bad(f"{kind} holds a non-string")
        return list(inner)

    if kind in ("S", "B") and isinstance(inner, str):
        return inner
    if kind == "N" and isinstance(inner, str):
        n = _number(inner)
        if n is None:
            raise bad("N is not a number")
        return n
    if kind == "BOOL" and isinstance(inner, bool):
        return inner
    if kind == "NULL":
        return None
    if kind == "M" and isinstance(inner, dict):
        return _attributes(inner, path)
    if kind == "L" and isinstance(inner, list):
        return [_attribute(item, f"{path}[{i}]") for i, item in enumerate(inner)]
    if kind in ("SS", "BS"):
        return strings()
    if kind == "NS":
        numbers = []
        for text in strings():
            n = _number(text)
            if n is None:
                raise bad("NS holds a non-number")
            numbers.append(n)
        return numbers
    raise bad(f"{kind} is not a DynamoDB type with that value")


# What Rust's `str::parse` accepts: ASCII digits only, no spaces or `_`.
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1


def _number(text: str):
    """An int when the text is an i64 or u64, else a finite float; None
    when it is no number."""
    if _INTEGER.match(text):
        # Past 20 digits no i64 or u64; and int() refuses over 4300 digits.
        digits = text.lstrip("+-").lstrip("0") or "0"
        if len(digits) <= 20:
            n = int(digits) if text[0] != "-" else -int(digits)
            if _I64_MIN <= n <= _U64_MAX:
                return n
    if _FLOAT.match(text):
        f = float(text)
        if f not in (float("inf"), float("-inf")):
            return f
    return None


# ---- JSON as serde_json prints it ---------------------------------------


def to_json(value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return (
        "{"
        + ",".join(json.dumps(k, ensure_ascii=False) + ":" + to_json(v) for k, v in value.items())
        + "}"
    )


def _float(f: float) -> str:
    """A finite float as serde_json prints it: the shortest digits that
    read back, laid out as `1.5`, `100.0`, `0.00001`, `1e+16`, `1.5e-7`
    (Python's repr has the same digits in another layout: `1e-05`)."""
    if f == 0:
        return "-0.0" if str(f)[0] == "-" else "0.0"
    sign = "-" if f < 0 else ""
    mantissa, _, exponent = repr(abs(f)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    # The value is 0.DIGITS times 10 to the power POINT.
    digits = whole + fraction
    point = len(whole) + int(exponent or 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    length = len(digits)
    if length <= point <= 16:
        return sign + digits + "0" * (point - length) + ".0"
    if 0 < point <= 16:
        return sign + digits[:point] + "." + digits[point:]
    if -5 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exponent = f"e{point - 1}" if point <= 0 else f"e+{point - 1}"
    if length == 1:
        return f"{sign}{digits}{exponent}"
    return f"{sign}{digits[0]}.{digits[1:]}{exponent}"
