"""Operations API, included under `api/integrations/` by app/urls.py."""

from django.urls import path

from integrations.apis import InboundListApi, IntegrationStatusApi, SyncListApi, SyncRetryApi

urlpatterns = [
    path("status/", IntegrationStatusApi.as_view(), name="integrations-status"),
    path("syncs/", SyncListApi.as_view(), name="integrations-sync-list"),
    path("syncs/<int:sync_id>/retry/", SyncRetryApi.as_view(), name="integrations-sync-retry"),
    path("inbound/", InboundListApi.as_view(), name="integrations-inbound-list"),
]
