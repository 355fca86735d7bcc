"""Orders API. Customers see and change only their own orders (others' are 404); staff see all and may delete."""

from decimal import Decimal

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from app.api import paginated_response
from orders.filters import ORDERING_CHOICES
from orders.models import Order, OrderStatus
from orders.selectors import order_get, order_list
from orders.services import order_change_status, order_create, order_delete, order_update, transitions_for
from users.models import User

MAX_QUANTITY = 2_147_483_647  # PostgreSQL integer


def _quantity_field(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY, **kwargs)


@extend_schema_field({"type": "string", "format": "decimal", "pattern": r"^\d{1,10}(?:\.\d{1,2})?$"})
class AmountField(serializers.DecimalField):
    """Documented as what it accepts: drf-spectacular's own pattern also allowed "", "-" and negative amounts."""

    def __init__(self, **kwargs):
        super().__init__(max_digits=12, decimal_places=2, min_value=Decimal("0"), **kwargs)


def _currency_field(**kwargs) -> serializers.RegexField:
    return serializers.RegexField(
        r"^[A-Za-z]{3}$", error_messages={"invalid": "Use a three-letter ISO 4217 code."}, **kwargs
    )


class OrderOutputSerializer(serializers.ModelSerializer):
    allowed_transitions = serializers.SerializerMethodField()

    class Meta:
        model = Order
        ref_name = "Order"
        fields = (
            "id",
            "user",
            "title",
            "quantity",
            "amount",
            "currency",
            "status",
            "comment",
            "created_at",
            "updated_at",
            "allowed_transitions",
        )
        read_only_fields = fields

    # Plain strings: an enum here would duplicate StatusEnum under a second name in the schema.
    @extend_schema_field(
        serializers.ListField(child=serializers.CharField(), help_text="Statuses the caller may move the order to.")
    )
    def get_allowed_transitions(self, order: Order) -> list[str]:
        request = self.context.get("request")
        return [str(s) for s in transitions_for(current=order.status, actor=request.user if request else None)]


class OrderFieldsSerializer(serializers.Serializer):
    """Editable order fields."""

    # Validated as strictly as the model (and the PostgreSQL column sizes), so bad input is a 400, never a 500.

    title = serializers.CharField(max_length=255)
    amount = AmountField()
    quantity = _quantity_field(required=False)
    currency = _currency_field(required=False)
    comment = serializers.CharField(allow_blank=True, required=False, trim_whitespace=False)


def _output(request, order: Order) -> dict:
    return OrderOutputSerializer(order, context={"request": request}).data


def _get_visible_order(request, order_id: int) -> Order:
    order = order_get(user=request.user, order_id=order_id)
    if order is None:
        raise Http404
    return order


class OrderListCreateApi(APIView):
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=OrderStatus.choices, required=False)
        user = serializers.IntegerField(min_value=1, required=False, help_text="Owner id (staff only).")
        ordering = serializers.ChoiceField(choices=ORDERING_CHOICES, required=False)

    class InputSerializer(OrderFieldsSerializer):
        quantity = _quantity_field(default=1)
        currency = _currency_field(default="USD")
        comment = serializers.CharField(allow_blank=True, default="", trim_whitespace=False)
        user = serializers.PrimaryKeyRelatedField(
            queryset=User.objects.all(), required=False, help_text="Owner (staff only); defaults to the caller."
        )

        class Meta:
            ref_name = "OrderCreateInput"

    @extend_schema(parameters=[FilterSerializer], responses=OrderOutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        orders = order_list(user=request.user, filters=filters.validated_data)
        return paginated_response(serializer_class=OrderOutputSerializer, queryset=orders, request=request, view=self)

    @extend_schema(request=InputSerializer, responses={201: OrderOutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        owner = data.pop("user", request.user)
        if owner != request.user and not request.user.is_staff:
            raise serializers.ValidationError({"user": ["Only staff can create orders for other users."]})
        order = order_create(user=owner, **data)
        return Response(_output(request, order), status=status.HTTP_201_CREATED)


class OrderDetailApi(APIView):
    class InputSerializer(OrderFieldsSerializer):
        class Meta:
            ref_name = "OrderUpdateInput"

    def get_permissions(self):
        if self.request.method == "DELETE":
            return [IsAdminUser()]
        return super().get_permissions()

    @extend_schema(responses=OrderOutputSerializer)
    def get(self, request, order_id: int):
        return Response(_output(request, _get_visible_order(request, order_id)))

    @extend_schema(request=InputSerializer, responses=OrderOutputSerializer)
    def put(self, request, order_id: int):
        return self._update(request, order_id, partial=False)

    @extend_schema(request=InputSerializer(partial=True), responses=OrderOutputSerializer)
    def patch(self, request, order_id: int):
        return self._update(request, order_id, partial=True)

    @extend_schema(responses={204: None})
    def delete(self, request, order_id: int):
        order_delete(order=_get_visible_order(request, order_id))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request, order_id: int, *, partial: bool) -> Response:
        order = _get_visible_order(request, order_id)
        serializer = self.InputSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        order = order_update(order=order, data=serializer.validated_data)
        return Response(_output(request, order))


class OrderStatusApi(APIView):
    """Staff may make any allowed transition; a customer may only cancel their own order while it is new or
    confirmed (403 with the reason otherwise). `allowed_transitions` in every answer lists what the caller may set."""

    class InputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=OrderStatus.choices)

        class Meta:
            ref_name = "OrderStatusInput"

    @extend_schema(request=InputSerializer, responses={200: OrderOutputSerializer, 400: None, 403: None, 404: None})
    def post(self, request, order_id: int):
        order = _get_visible_order(request, order_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        order = order_change_status(order=order, status=serializer.validated_data["status"], actor=request.user)
        return Response(_output(request, order))
