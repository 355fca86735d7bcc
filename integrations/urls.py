from django.urls import path

from integrations.inbound.views import bitrix_webhook

urlpatterns = [
    path("bitrix/webhook", bitrix_webhook, name="bitrix-webhook"),
    path("bitrix/webhook/", bitrix_webhook),
]
