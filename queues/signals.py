"""What the queue tells whoever listens, without knowing who listens.

Sent synchronously, inside the sender's transaction where there is one, so a
receiver's writes commit or roll back with the sender's. The monitoring app
connects receivers that raise and resolve its alerts (monitoring/receivers.py).

- ``service_failing``: a service failed ``consecutive`` sends in a row and backs
  off ``backoff_seconds``. Arguments: service_id, name, consecutive, backoff_seconds.
- ``service_recovered``: a service that was failing sent again (or is back
  under the failure threshold). Argument: service_id.
- ``outcome_unrecordable``: the database refused a send's outcome; the subtask
  is parked. Arguments: subtask_id, task_id, reason, error.
- ``task_failed``: a task failed as a whole. Arguments: task_id, name, owner_id, reason.
- ``first_sends_recorded``: tasks sent their first mail. Argument: waits,
  {task_id: (seconds waited since queue entry, owner id)}; sent once per
  recorded batch (also for a batch of one).
"""

from __future__ import annotations

from django.dispatch import Signal

service_failing = Signal()
service_recovered = Signal()
outcome_unrecordable = Signal()
task_failed = Signal()
first_sends_recorded = Signal()
