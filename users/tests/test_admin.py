from unittest import mock

import pytest

from users.models import User
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

# The read-only sync history inline is a formset: a browser always posts its management form.
PREFIX = "integrations-integrationsync-content_type-object_id"
SYNC_HISTORY_INLINE_MANAGEMENT = {f"{PREFIX}-TOTAL_FORMS": "0", f"{PREFIX}-INITIAL_FORMS": "0"}


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(
    "query", ["", "?q=customer", "?q=%2B1555", "?is_staff__exact=1", "?o=2", "?is_active__exact=0&q=x"]
)
def test_user_changelist_renders_with_search_and_filters(superuser_client, query):
    UserFactory.create_batch(3)

    assert superuser_client.get(f"/admin/users/user/{query}").status_code == 200


def test_user_change_and_add_pages_render(superuser_client):
    user = UserFactory()

    assert superuser_client.get(f"/admin/users/user/{user.pk}/change/").status_code == 200
    assert superuser_client.get("/admin/users/user/add/").status_code == 200


def test_user_admin_save_goes_through_model_save(superuser_client):
    user = UserFactory()
    with mock.patch.object(User, "save", autospec=True, side_effect=User.save) as save:
        response = superuser_client.post(
            f"/admin/users/user/{user.pk}/change/",
            {
                "username": user.username,
                "email": user.email,
                "phone": "+490001",
                "first_name": "Edited",
                "last_name": user.last_name,
                "is_active": "on",
                "date_joined_0": "2024-01-01",
                "date_joined_1": "10:00:00",
                **SYNC_HISTORY_INLINE_MANAGEMENT,
            },
        )

    assert response.status_code == 302, response.content
    user.refresh_from_db()
    assert (user.first_name, user.phone) == ("Edited", "+490001")
    assert [call.args[0].pk for call in save.call_args_list] == [user.pk]
