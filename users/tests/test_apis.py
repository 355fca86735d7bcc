from unittest import mock

import pytest
from rest_framework.test import APIClient

from users.models import User
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def api(user: User | None = None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user=user)
    return client


def test_me_returns_own_profile():
    user = UserFactory(email="me@example.com", phone="+15550000001")

    response = api(user).get("/api/users/me/")

    assert response.status_code == 200
    assert response.json()["email"] == "me@example.com"
    assert response.json()["phone"] == "+15550000001"


def test_me_patch_updates_only_given_fields_and_normalises_email():
    user = UserFactory(first_name="Ann", phone="+1")

    response = api(user).patch("/api/users/me/", {"email": " New@Example.COM ", "phone": "+2"}, format="json")

    assert response.status_code == 200, response.content
    user.refresh_from_db()
    assert (user.email, user.phone, user.first_name) == ("new@example.com", "+2", "Ann")


def test_me_put_replaces_profile_fields():
    user = UserFactory()
    body = {"email": "put@example.com", "phone": "", "first_name": "Bo", "last_name": "Li"}

    response = api(user).put("/api/users/me/", body, format="json")

    assert response.status_code == 200, response.content
    user.refresh_from_db()
    assert (user.email, user.phone, user.first_name, user.last_name) == ("put@example.com", "", "Bo", "Li")


def test_me_put_without_email_is_400():
    response = api(UserFactory()).put("/api/users/me/", {"first_name": "X"}, format="json")

    assert response.status_code == 400
    assert "email" in response.json()


def test_me_duplicate_email_is_400_with_field_message():
    UserFactory(email="taken@example.com")
    user = UserFactory()

    response = api(user).patch("/api/users/me/", {"email": "TAKEN@example.com"}, format="json")

    assert response.status_code == 400
    assert response.json()["email"]


def test_me_email_taken_between_validation_and_save_is_400_not_500():
    UserFactory(email="raced@example.com")
    user = UserFactory()

    # The racing request committed after our full_clean: only the unique index catches it.
    with mock.patch.object(User, "validate_unique"):
        response = api(user).patch("/api/users/me/", {"email": "raced@example.com"}, format="json")

    assert response.status_code == 400
    assert response.json()["email"]


@pytest.mark.parametrize(
    "body",
    [{"email": "not-an-email"}, {"phone": "1" * 33}, {"first_name": ["a"]}, {"email": None}],
)
def test_me_bad_input_is_400(body):
    response = api(UserFactory()).patch("/api/users/me/", body, format="json")

    assert response.status_code == 400
    assert set(body) <= set(response.json())


def test_me_anonymous_is_401():
    assert api().get("/api/users/me/").status_code == 401


@pytest.mark.parametrize(
    ("method", "url"), [("get", "/api/users/"), ("post", "/api/users/"), ("get", "/api/users/{id}/")]
)
def test_user_management_is_403_for_customers_and_401_for_anonymous(method, url):
    customer = UserFactory()
    url = url.format(id=customer.pk)

    assert getattr(api(customer), method)(url, {}, format="json").status_code == 403
    assert getattr(api(), method)(url, {}, format="json").status_code == 401


def test_staff_lists_users_paginated_and_searches_by_email():
    staff = UserFactory(is_staff=True)
    UserFactory(email="alice@shop.test")
    UserFactory(email="bob@other.test")

    everyone = api(staff).get("/api/users/").json()
    found = api(staff).get("/api/users/", {"search": "SHOP.test"}).json()

    assert everyone["count"] == 3
    assert {"count", "next", "previous", "results"} <= set(everyone)
    assert [u["email"] for u in found["results"]] == ["alice@shop.test"]


def test_staff_creates_user_who_can_then_obtain_a_token():
    staff = UserFactory(is_staff=True)
    body = {"email": "New.Customer@Example.com", "password": "s3cret-pass", "phone": "+4915112345678"}

    response = api(staff).post("/api/users/", body, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["email"] == "new.customer@example.com"
    assert "password" not in response.json()
    token = api().post("/api/auth/token/", {"username": "New.Customer@Example.com", "password": "s3cret-pass"})
    assert token.status_code == 200


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("short1", "too short"),
        ("password123", "too common"),
        ("8362517409", "entirely numeric"),
        ("walter.white.42", "too similar"),
    ],
)
def test_staff_create_with_a_weak_password_is_400_saying_why_and_writes_nothing(password, says):
    staff = UserFactory(is_staff=True)
    body = {"email": "walter.white.42@example.com", "password": password}

    response = api(staff).post("/api/users/", body, format="json")

    assert response.status_code == 400, response.content
    assert any(says in message for message in response.json()["password"]), response.json()
    assert password not in response.content.decode()
    assert not User.objects.filter(email=body["email"]).exists()


def test_staff_create_with_duplicate_email_is_400():
    staff = UserFactory(is_staff=True)
    UserFactory(email="dup@example.com")

    response = api(staff).post("/api/users/", {"email": "dup@example.com", "username": "other"}, format="json")

    assert response.status_code == 400
    assert response.json()["email"]


def test_staff_retrieves_user_and_unknown_id_is_404():
    staff = UserFactory(is_staff=True)
    customer = UserFactory()

    assert api(staff).get(f"/api/users/{customer.pk}/").json()["email"] == customer.email
    assert api(staff).get("/api/users/999999/").status_code == 404
