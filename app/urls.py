from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import include, path, reverse, reverse_lazy
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from app import health
from integrations.dashboard import VIEW_PERMISSION, dashboard_urls
from integrations.metrics import metrics_view

handler404 = "app.api.not_found"
# The admin's "View site" link: this service has no public pages, its public face is the API.
admin.site.site_url = reverse_lazy("swagger-ui")


def root_redirect(request: HttpRequest) -> HttpResponseRedirect:
    """`/` has no page of its own: operators go to the sync dashboard (or the admin index), everyone else to the API
    docs."""
    user = request.user
    if user.is_active and user.is_staff:
        target = "sync_dashboard:index" if user.has_perm(VIEW_PERMISSION) else "admin:index"
    else:
        target = "swagger-ui"
    return HttpResponseRedirect(reverse(target))


urlpatterns = [
    path("", root_redirect, name="root"),
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
