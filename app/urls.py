from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from app import health
from integrations.dashboard import dashboard_urls
from integrations.metrics import metrics_view

handler404 = "app.api.not_found"

urlpatterns = [
    path("admin/integrations/dashboard/", include(dashboard_urls)),
    path("admin/", admin.site.urls),
    # Answered by app.health.HealthMiddleware before the Host check; listed here to be found and reversed.
    path("health/", health.ready, name="health"),
    path("health/live/", health.live, name="health-live"),
    path("health/ready/", health.ready, name="health-ready"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/integrations/", include("integrations.api_urls")),
    path("metrics", metrics_view, name="metrics"),
    path("api/", include("users.urls")),
    path("api/", include("orders.urls")),
    path("", include("integrations.urls")),
]
