"""What the reputation guards tell whoever listens (the monitoring app raises its alerts from them).

Sent synchronously, inside the sender's transaction where there is one.

- ``task_over_bounce_limit``: a task passed the hard-bounce limit. Arguments:
  task_id, name, owner_id, reason, outcome (what the guard did about it).
- ``reputation_judged``: the ``reputation_check`` sweep's verdict over the
  window. Arguments: services and owners ({id: Rates} of those past a limit
  only; the others are back under every limit), config (the reputation
  settings). A receiver returns how many earlier verdicts it withdrew (the
  sweep reports their sum as ``alerts_resolved``).
"""

from __future__ import annotations

from django.dispatch import Signal

task_over_bounce_limit = Signal()
reputation_judged = Signal()
