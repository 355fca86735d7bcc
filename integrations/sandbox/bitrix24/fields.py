"""Field schemas of the emulated CRM entities and value normalisation (the portal stores and returns strings)."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One entity field as crm.*.fields describes it."""

    type: str
    read_only: bool = False
    multiple: bool = False
    returned: bool = True  # CONTACT_IDS is writable but crm.deal.get does not return it (real portal behaviour)


MULTI_FIELDS = ("PHONE", "EMAIL", "WEB", "IM")

_COMMON = {
    "ID": Field("integer", read_only=True),
    "ASSIGNED_BY_ID": Field("user"),
    "CREATED_BY_ID": Field("user", read_only=True),
    "MODIFY_BY_ID": Field("user", read_only=True),
    "DATE_CREATE": Field("datetime", read_only=True),
    "DATE_MODIFY": Field("datetime", read_only=True),
    "OPENED": Field("char"),
    "COMMENTS": Field("string"),
    "SOURCE_ID": Field("crm_status"),
    "SOURCE_DESCRIPTION": Field("string"),
    "ORIGINATOR_ID": Field("string"),
    "ORIGIN_ID": Field("string"),
    "COMPANY_ID": Field("crm_company"),
}

DEAL_FIELDS: dict[str, Field] = {
    **_COMMON,
    "TITLE": Field("string"),
    "TYPE_ID": Field("crm_status"),
    "CATEGORY_ID": Field("crm_category"),
    "STAGE_ID": Field("crm_status"),
    "STAGE_SEMANTIC_ID": Field("string", read_only=True),
    "IS_NEW": Field("char", read_only=True),
    "CURRENCY_ID": Field("crm_currency"),
    "OPPORTUNITY": Field("double"),
    "TAX_VALUE": Field("double"),
    "CONTACT_ID": Field("crm_contact"),
    "CONTACT_IDS": Field("crm_contact", multiple=True, returned=False),
    "BEGINDATE": Field("date"),
    "CLOSEDATE": Field("date"),
    "CLOSED": Field("char"),
    "ADDITIONAL_INFO": Field("string"),
}

CONTACT_FIELDS: dict[str, Field] = {
    **_COMMON,
    "HONORIFIC": Field("crm_status"),
    "NAME": Field("string"),
    "SECOND_NAME": Field("string"),
    "LAST_NAME": Field("string"),
    "BIRTHDATE": Field("date"),
    "TYPE_ID": Field("crm_status"),
    "POST": Field("string"),
    "EXPORT": Field("char"),
    "HAS_PHONE": Field("char", read_only=True),
    "HAS_EMAIL": Field("char", read_only=True),
    "ORIGIN_VERSION": Field("string"),
    **{name: Field("crm_multifield", multiple=True) for name in MULTI_FIELDS},
}


INTEGER_TYPES = ("integer", "user", "crm_contact", "crm_company", "crm_category")


def to_portal_string(value: Any, field: Field) -> str | None:
    """Normalise a written scalar the way the portal stores it (ints as strings, money with 2 decimals, Y/N flags)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "Y" if value else "N"
    if field.type == "double":
        try:
            return f"{float(value):.2f}"
        except (TypeError, ValueError):
            return "0.00"
    if field.type in INTEGER_TYPES:
        text = str(value).strip()
        return str(int(text)) if text.lstrip("-").isdigit() else None
    return str(value)


def describe(fields: dict[str, Field]) -> dict[str, dict[str, Any]]:
    """Render the crm.*.fields result."""
    return {
        name: {
            "type": f.type,
            "isRequired": False,
            "isReadOnly": f.read_only,
            "isImmutable": name == "CATEGORY_ID",
            "isMultiple": f.multiple,
            "isDynamic": False,
            "title": name,
        }
        for name, f in fields.items()
    }
