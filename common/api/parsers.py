"""Request parsers that refuse oversized or pathological bodies with a 4xx instead of a 500.

DRF reads a JSON body from the request stream, so Django's
DATA_UPLOAD_MAX_MEMORY_SIZE (checked only by ``request.body`` and form
parsing) never applies to it, and a deeply nested document makes ``json``
raise RecursionError, which DRF does not catch.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.utils import json


def read_limited(stream, limit: int) -> bytes:
    """The whole body, or RequestDataTooBig (mapped to 413) once it passes ``limit`` bytes."""
    if stream is None:
        return b""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise RequestDataTooBig(f"request body larger than {limit} bytes")
    return data


class LimitedJSONParser(JSONParser):
    """JSON bodies of at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes; too deep a nesting is a parse error."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        raw = read_limited(stream, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        parse_constant = json.strict_constant if self.strict else None
        try:
            return json.loads(raw.decode(encoding), parse_constant=parse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply") from None


class CSVTextParser(BaseParser):
    """A ``text/csv`` body, handed to the view as text (UTF-8, an optional BOM dropped)."""

    media_type = "text/csv"
    # CSV imports may be larger than an ordinary JSON request.
    max_bytes = 10 * 1024 * 1024

    def parse(self, stream, media_type=None, parser_context=None) -> str:
        raw = read_limited(stream, self.max_bytes)
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ParseError("the CSV body is not UTF-8 text") from None


def csv_import_text(request, upload_serializer_class: type) -> str:
    """A CSV import's text: a ``text/csv`` body as CSVTextParser read it, or a multipart ``file`` (same limits)."""
    if isinstance(request.data, str):
        return request.data
    upload = upload_serializer_class(data=request.data)
    upload.is_valid(raise_exception=True)
    file = upload.validated_data["file"]
    if file.size > CSVTextParser.max_bytes:
        raise ValidationError({"file": [f"at most {CSVTextParser.max_bytes} bytes"]})
    try:
        return file.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError({"file": ["not UTF-8 text"]}) from None
