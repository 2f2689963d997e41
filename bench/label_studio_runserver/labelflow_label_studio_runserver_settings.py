"""Label Studio's settings as the local stack had them under `label-studio start` (runserver), for the benchmark's "before".

The stack's own module (infra/local/label_studio_settings/) has since added SQLite's WAL mode, IMMEDIATE transactions
and a busy timeout for gunicorn's workers; this is that module without them, as it was before the change (git
203530b~1). `bench/annotators_bench.py --compare-runserver` points DJANGO_SETTINGS_MODULE here.
This module runs inside Label Studio's own environment, never labelflow's.
"""

from core.settings.base import *  # noqa: F403
from label_studio.core.settings.label_studio import *  # noqa: F403

FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
