import pytest
from django.utils.crypto import get_random_string
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ORDER = {"title": "Widget", "amount": "10.00"}


def test_token_endpoint_returns_token_for_valid_credentials():
    user = UserFactory(username="ann")

    response = APIClient().post("/api/auth/token/", {"username": "ann", "password": "pass12345"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=user).key}


def test_token_endpoint_rejects_bad_credentials_with_400():
    UserFactory(username="ann")

    response = APIClient().post("/api/auth/token/", {"username": "ann", "password": "wrong"}, format="json")

    assert response.status_code == 400
    assert "token" not in response.json()


def test_token_endpoint_ignores_a_stale_token_header():
    UserFactory(username="ann")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token stale")

    response = client.post("/api/auth/token/", {"username": "ann", "password": "pass12345"}, format="json")

    assert response.status_code == 200


def test_token_authenticates_requests_without_csrf():
    user = UserFactory()
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    assert client.get("/api/users/me/").json()["id"] == user.pk
    assert client.post("/api/orders/", ORDER, format="json").status_code == 201


def test_invalid_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token nope")

    assert client.get("/api/users/me/").status_code == 401


def test_session_auth_reads_without_csrf_token():
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(UserFactory())

    assert client.get("/api/orders/").status_code == 200


def test_session_auth_rejects_unsafe_methods_without_csrf_token():
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(UserFactory())

    response = client.post("/api/orders/", ORDER, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_session_auth_accepts_unsafe_methods_with_csrf_token():
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(UserFactory())
    csrf = get_random_string(32)
    client.cookies["csrftoken"] = csrf

    response = client.post("/api/orders/", ORDER, format="json", HTTP_X_CSRFTOKEN=csrf)

    assert response.status_code == 201
