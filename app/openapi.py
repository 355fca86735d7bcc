"""OpenAPI schema class: every operation also documents the error answers DRF and app.api give it."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiResponse

ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
# Field name (or non_field_errors) → messages; a body that cannot be parsed gets `detail` alone.
VALIDATION_ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}


class AutoSchema(SpectacularAutoSchema):
    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        for code, (description, component) in _error_responses(operation).items():
            if code not in operation["responses"]:
                response = OpenApiResponse(response=self._component(*component), description=description)
                operation["responses"][code] = self._get_response_for_code(response, code)
        return operation

    def _component(self, name: str, schema: dict) -> dict:
        component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
        self.registry.register_on_missing(component)
        return component.ref


def _error_responses(operation: dict) -> dict[str, tuple[str, tuple[str, dict]]]:
    """Which error codes the operation can answer, read from what it declares (body, parameters, security)."""
    error, invalid = ("Error", ERROR), ("ValidationError", VALIDATION_ERROR)
    parameters = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
    query = {name for where, name in parameters if where == "query"}
    security = operation.get("security")
    codes = {}
    if "requestBody" in operation or query - {"page"}:
        codes["400"] = ("Invalid input.", invalid)
    if security and {} not in security:
        codes["401"] = ("Not authenticated, or the credentials are invalid.", error)
        # Session-authenticated unsafe requests also get 403 when the CSRF token is missing.
        codes["403"] = ("Authenticated, but not allowed (staff-only operation or CSRF failure).", error)
    if any(where == "path" for where, _ in parameters) or "page" in query:
        codes["404"] = ("No such object, or a page past the last one.", error)
    if "requestBody" in operation:
        codes["415"] = ("The body's Content-Type is missing or not one of those listed.", error)
    return codes
