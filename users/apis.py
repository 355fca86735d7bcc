"""Users API: token login, own profile, and staff-only user management."""

from contextlib import contextmanager

from django.db import IntegrityError
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from app.api import paginated_response
from app.throttles import LoginAddressThrottle, LoginUsernameThrottle
from users.models import User
from users.selectors import user_get, user_list
from users.services import user_create, user_update


@contextmanager
def _unique_conflict_as_400():
    """Two requests racing for one e-mail pass full_clean; the loser hits the unique index and gets a 400, not a 500."""
    try:
        yield
    except IntegrityError:
        raise serializers.ValidationError({"email": ["A user with this email or username already exists."]})


class UserOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        ref_name = "User"
        fields = ("id", "username", "email", "phone", "first_name", "last_name", "is_staff", "date_joined")
        # Read-only drops the model's input validators: the username regex means Unicode \w in Python but ASCII \w as
        # an OpenAPI pattern, so the schema rejected usernames the API accepts (e.g. "José").
        read_only_fields = fields


class TokenObtainApi(ObtainAuthToken):
    """POST username + password → {"token": ...}; bad credentials → 400; too many tries → 429 with Retry-After
    (per address and per username, rates in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])."""

    # Public: a stale token in the Authorization header must not stop a client from logging in again.
    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = (LoginAddressThrottle, LoginUsernameThrottle)

    @extend_schema(
        request=AuthTokenSerializer,
        responses={
            200: inline_serializer("AuthTokenResponse", {"token": serializers.CharField()}),
            429: OpenApiResponse(description="Too many login attempts; retry after the Retry-After header's seconds."),
        },
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class UserMeApi(APIView):
    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=254)
        phone = serializers.CharField(max_length=32, allow_blank=True, required=False)
        first_name = serializers.CharField(max_length=150, allow_blank=True, required=False)
        last_name = serializers.CharField(max_length=150, allow_blank=True, required=False)

        class Meta:
            ref_name = "UserMeInput"

    @extend_schema(responses=UserOutputSerializer)
    def get(self, request):
        return Response(UserOutputSerializer(request.user).data)

    @extend_schema(request=InputSerializer, responses=UserOutputSerializer)
    def put(self, request):
        return self._update(request, partial=False)

    @extend_schema(request=InputSerializer(partial=True), responses=UserOutputSerializer)
    def patch(self, request):
        return self._update(request, partial=True)

    def _update(self, request, *, partial: bool) -> Response:
        serializer = self.InputSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        with _unique_conflict_as_400():
            user = user_update(user=request.user, data=serializer.validated_data)
        return Response(UserOutputSerializer(user).data)


class UserListCreateApi(APIView):
    permission_classes = [IsAdminUser]
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    class FilterSerializer(serializers.Serializer):
        search = serializers.CharField(required=False, help_text="Part of the e-mail address.")
        is_staff = serializers.BooleanField(required=False, allow_null=True, default=None)

    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=254)
        password = serializers.CharField(
            required=False,
            write_only=True,
            style={"input_type": "password"},
            help_text="Checked by the configured password validators (length, similarity, common, numeric).",
        )
        username = serializers.CharField(max_length=150, required=False)
        phone = serializers.CharField(max_length=32, allow_blank=True, required=False)
        first_name = serializers.CharField(max_length=150, allow_blank=True, required=False)
        last_name = serializers.CharField(max_length=150, allow_blank=True, required=False)

        class Meta:
            ref_name = "UserCreateInput"

    @extend_schema(parameters=[FilterSerializer], responses=UserOutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        users = user_list(filters=filters.validated_data)
        return paginated_response(serializer_class=UserOutputSerializer, queryset=users, request=request, view=self)

    @extend_schema(request=InputSerializer, responses={201: UserOutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with _unique_conflict_as_400():
            user = user_create(**serializer.validated_data)
        return Response(UserOutputSerializer(user).data, status=status.HTTP_201_CREATED)


class UserDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=UserOutputSerializer)
    def get(self, request, user_id: int):
        user = user_get(user_id=user_id)
        if user is None:
            raise Http404
        return Response(UserOutputSerializer(user).data)
