import os

from django.core.wsgi import get_wsgi_application

from edm.startup import load_settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")
# A bad environment: one line on stderr and exit status 1 (under gunicorn,
# edm.gunicorn_conf has already checked it in the master).
load_settings_or_exit()

application = get_wsgi_application()
