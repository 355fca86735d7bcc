import codecs
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")


def drop_non_text_charset(app):
    """Django decodes the query string with the request's charset before any view runs; a codec such as rot13 or
    base64 (codecs.lookup accepts it) would crash it with a 500. Such a charset is dropped: the body is then read as
    UTF-8 and the view answers 4xx like for any other malformed input."""

    def wrapped(environ, start_response):
        content_type = environ.get("CONTENT_TYPE", "")
        if "charset=" in content_type.lower():
            parts = [p.strip() for p in content_type.split(";")]
            kept = [parts[0]] + [p for p in parts[1:] if not p.lower().startswith("charset=") or _is_text(p[8:])]
            environ["CONTENT_TYPE"] = "; ".join(kept)
        return app(environ, start_response)

    return wrapped


def _is_text(name: str) -> bool:
    try:
        return codecs.lookup(name.strip().strip('"')).__dict__.get("_is_text_encoding", True)
    except LookupError:
        return True  # unknown charsets are handled by Django itself (it falls back)


application = drop_non_text_charset(get_wsgi_application())
