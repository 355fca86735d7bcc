"""app.urls plus a plain 200 view: the baseline of the inbound-webhook benchmark."""

from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def plain(request):
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [path("bench/plain", plain), path("", include("app.urls"))]
