import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A platform user: owns contacts, tags and sending tasks.

    The primary key is a UUID because the plan's tables (task_wait_metrics.user_id)
    reference users by UUID.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)

    class Meta(AbstractUser.Meta):
        db_table = "users"
        swappable = "AUTH_USER_MODEL"
