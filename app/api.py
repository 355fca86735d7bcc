"""API-wide helpers: Django ValidationError from services becomes a 400 with field messages, PermissionDenied a 403
with its reason; JSON 404s; pagination."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, DjangoPermissionDenied) and exc.args:
        exc = exceptions.PermissionDenied(detail=str(exc.args[0]))  # a service's reason, not DRF's generic text
    return drf_exception_handler(exc, context)


def not_found(request, exception):
    """A URL under /api/ that matches no route (e.g. /api/orders/abc/) answers JSON like DRF's own 404s."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def paginated_response(*, serializer_class, queryset, request, view) -> Response:
    """One page of `queryset` through the view's paginator (HackSoft's get_paginated_response)."""
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True, context={"request": request}).data)
