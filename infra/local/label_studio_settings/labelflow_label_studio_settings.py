"""Label Studio's own settings for the local stack, with the files it saves private to their owner.

Django chmods every file it saves (exports, uploads) to FILE_UPLOAD_PERMISSIONS, 0o644 by default, whatever the
process umask; `labelflow up` points DJANGO_SETTINGS_MODULE here so that they stay 0600 like the rest of the home.
This module runs inside Label Studio's own environment, never labelflow's.
"""

# Label Studio's settings module reads settings back while it is being imported (Sentry's set-up): Django then sees
# this module half-imported, so the base settings come first, as they do in Label Studio's own module.
from core.settings.base import *  # noqa: F403
from label_studio.core.settings.label_studio import *  # noqa: F403

FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
