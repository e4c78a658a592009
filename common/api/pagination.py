from __future__ import annotations

from typing import Any

from rest_framework import exceptions, pagination
from rest_framework.request import Request

from common.api.filters import EMPTY


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=N&page_size=M`` (1 to 500 per page; anything else is a 400, not a silent default)."""

    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if raw == "":
            raise exceptions.ValidationError({self.page_size_query_param: [EMPTY]})
        size = int(raw) if raw.isascii() and raw.isdigit() else 0
        if not 1 <= size <= self.max_page_size:
            message = f"a whole number from 1 to {self.max_page_size}"
            raise exceptions.ValidationError({self.page_size_query_param: [message]})
        return size

    def get_page_number(self, request: Request, paginator: Any) -> Any:
        if request.query_params.get(self.page_query_param) == "":
            raise exceptions.ValidationError({self.page_query_param: [EMPTY]})
        return super().get_page_number(request, paginator)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["maximum"] = self.max_page_size
        return parameters
