"""Label Studio's own settings for the local stack: private saved files, and SQLite fit for several server processes.

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

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # Several gunicorn workers write one SQLite file. WAL lets readers run beside the one writer (the mode is stored
    # in the file: the pragma is a no-op once set). A transaction that began as a reader and then writes fails at
    # once with "database is locked" whatever the busy timeout (SQLite cannot wait without risking a deadlock), so
    # every transaction takes the write lock up front (IMMEDIATE), and then waits up to `timeout` seconds for it.
    DATABASES["default"]["OPTIONS"] = {  # noqa: F405
        **DATABASES["default"].get("OPTIONS", {}),  # noqa: F405
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        # In WAL mode NORMAL stays consistent after any crash; only a power cut can lose the last commits. FULL
        # fsyncs at every commit, under the write lock, which every other worker then waits for.
        "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
    }
