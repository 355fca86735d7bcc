"""Static files come from this server (WhiteNoise), including Swagger UI: no CDN, nothing unpinned.

Production (collectstatic output, hashed names) is covered by test_production_commands.py; here the apps' static
folders are served as they are, as in DEBUG and the embedded mode.
"""

import re

from django.contrib.staticfiles import finders

ATTRIBUTE_URLS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def test_api_docs_reference_only_local_static_files(client):
    page = client.get("/api/docs/").content.decode()

    urls = ATTRIBUTE_URLS.findall(page)
    assert urls, page[:2000]
    assert all(url.startswith("/static/drf_spectacular_sidecar/") for url in urls), urls
    assert "://" not in " ".join(urls) and "@latest" not in page and "cdn" not in page.lower()
    for url in urls:
        assert finders.find(url.removeprefix("/static/")), f"{url} is not a static file of an installed app"
        assert client.get(url).status_code == 200, url


def test_static_files_are_served_by_the_app_with_debug_off(client, settings):
    assert settings.DEBUG is False  # as in production: Django itself would not serve /static/
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    assert client.get("/static/admin/css/missing.css").status_code == 404
