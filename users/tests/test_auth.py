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


def login(username="ann", password="wrong", address="10.0.0.1", **headers):
    return APIClient().post(
        "/api/auth/token/", {"username": username, "password": password}, format="json", REMOTE_ADDR=address, **headers
    )


def test_login_attempts_per_username_are_throttled_with_retry_after(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"login": "100/min", "login_username": "3/min"},
    }
    UserFactory(username="ann")

    answers = [login(address=f"10.0.0.{i}").status_code for i in range(3)]
    refused = login(password="pass12345", address="10.0.0.9")

    assert answers == [400, 400, 400]
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert "throttled" in refused.json()["detail"]
    assert login(username="bob", address="10.0.0.9").status_code == 400  # another account is not locked


def test_login_attempts_per_address_are_throttled_and_x_forwarded_for_is_not_trusted_by_default(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"login": "2/min", "login_username": "100/min"},
    }

    assert [login(username=f"u{i}", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}").status_code for i in range(2)] == [400, 400]
    refused = login(username="u9", HTTP_X_FORWARDED_FOR="192.0.2.99")

    assert refused.status_code == 429 and refused.has_header("Retry-After")
    assert login(username="u9", address="10.0.0.2").status_code == 400


def test_default_login_rates_are_configured(settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert rates["login"] and rates["login_username"]


def test_a_cache_outage_does_not_lock_users_out(settings, monkeypatch):
    from django.core.cache import cache

    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(cache, "get", down)
    UserFactory(username="ann")

    assert login(password="pass12345").status_code == 200
