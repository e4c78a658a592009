import os

from django.core.asgi import get_asgi_application

from edm.startup import load_settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")
load_settings_or_exit()  # a bad environment: one line on stderr and exit status 1

application = get_asgi_application()
