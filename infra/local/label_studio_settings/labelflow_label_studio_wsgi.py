"""Label Studio's WSGI application with its static files served by WhiteNoise, for gunicorn.

Label Studio serves /static/ and /react-app/ through Django views meant for development (a worker busy per file,
no compression, no long cache); its image puts nginx in front. Here WhiteNoise serves the files the package ships,
already collected (STATIC_ROOT has Django's manifest), with far-future caching for the hashed names.
This module runs inside Label Studio's own environment, never labelflow's.
"""

import re

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from whitenoise import WhiteNoise

# Names with a content hash (jquery.min.e6c2415c0ace.js, 478.chunk.f2acee9c5a04.js) never change: cache them a year.
HASHED_NAME = re.compile(r"\.[0-9a-f]{12}\.[^/]+$")


def is_immutable(path: str, url: str) -> bool:
    """Whether a static file's name carries its content hash."""
    return bool(HASHED_NAME.search(url))


application = WhiteNoise(
    get_wsgi_application(), root=settings.STATIC_ROOT, prefix=settings.STATIC_URL, immutable_file_test=is_immutable
)
application.add_files(settings.REACT_APP_ROOT, prefix="/react-app/")
# Label Studio rewrites {{HOSTNAME}} in this one file per request: leave it to its view.
application.files.pop(f"{settings.STATIC_URL}fonts/roboto/roboto.css", None)
