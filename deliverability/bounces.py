"""What an SMTP refusal says about the recipient: its bounce class, from the reply's status codes.

Pure classification: no database, no queue code. The transports classify
each reply they get; the recorder acts on the class (queues.scheduler.outcomes).

The enhanced status code (RFC 3463: ``class.subject.detail`` at the start of
the reply text, e.g. ``550 5.1.1 user unknown``) decides; without one, the
basic code alone (RFC 5321):

- 4xx, with or without ``4.x.x``: ``soft``; retried (as every 4xx is);
- 5xx with ``5.1.1``, ``5.1.2``, ``5.1.3``, ``5.1.6``, ``5.1.10``: ``hard``;
  failed, and the address suppressed;
- 5xx with ``5.7.x`` (policy, authentication, spam), or ``5.1.7`` / ``5.1.8``
  (the *sender's* address): ``policy``; failed, and counted against the service;
- any other 5xx, including a 5xx with no enhanced code: ``failed``; failed.

Only the codes that say the recipient's address does not exist (or cannot
exist) suppress it. A plain ``550`` is "mailbox unavailable" for everything
from an unknown user to a blocklisted sender or a greylisting mistake
(RFC 5321 4.2.3), and reply texts ("user unknown", "no such user") differ by
server and language, so no text rule is reliable enough to stop mailing
someone for good: a 5xx without an enhanced code is ``failed``, not ``hard``.
An enhanced code whose class contradicts the basic code (``550 4.1.1``) is
ignored as well. Replies that are not about the recipient (the greeting,
AUTH, MAIL FROM) are never ``hard``: there a 5.1.x names the sender.
"""

from __future__ import annotations

import re

from django.db import models


class Bounce(models.TextChoices):
    """The class of a refusal; empty for a send that was accepted or never got an SMTP reply."""

    NONE = "", "-"
    SOFT = "soft", "Soft (temporary)"
    HARD = "hard", "Hard (no such address)"
    POLICY = "policy", "Policy (refused the sender or the content)"
    FAILED = "failed", "Other permanent failure"


# class.subject.detail: class 2, 4 or 5; subject and detail of 1-3 digits (RFC 3463 section 2).
# A reply text may still carry its basic code ("550 5.1.1 ..." or "550-5.1.1 ...").
_ENHANCED = re.compile(r"\s*(?:\d{3}[ -])?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")

# X.1.y details that say the recipient's address is bad: 1 bad destination
# mailbox, 2 bad destination system, 3 bad destination mailbox syntax,
# 6 mailbox moved with no forwarding address, 10 null MX (RFC 7505). Not 0
# (unspecified), 4 (ambiguous), 5 (valid), 9 (relayed to a non-compliant mailer).
HARD_ADDRESS_DETAILS = frozenset({1, 2, 3, 6, 10})
# X.1.7 bad sender mailbox syntax, X.1.8 bad sender system address: the service's problem.
SENDER_ADDRESS_DETAILS = frozenset({7, 8})


def enhanced_code(reply: str) -> tuple[int, int, int] | None:
    """The enhanced status code the reply starts with, as (class, subject, detail), or None."""
    found = _ENHANCED.match(reply)
    if found is None:
        return None
    return int(found.group(1)), int(found.group(2)), int(found.group(3))


def bounce_class(code: int | None, reply: str, *, about_recipient: bool = True) -> Bounce:
    """Classify an SMTP reply; ``about_recipient`` is False for replies to the greeting, AUTH or MAIL FROM."""
    if code is None or not 400 <= code < 600:
        return Bounce.NONE
    basic = code // 100
    enhanced = enhanced_code(reply)
    if basic == 4:
        return Bounce.SOFT
    if enhanced is None or enhanced[0] != basic:
        return Bounce.FAILED
    _, subject, detail = enhanced
    if subject == 7 or (subject == 1 and detail in SENDER_ADDRESS_DETAILS):
        return Bounce.POLICY
    if subject == 1 and detail in HARD_ADDRESS_DETAILS:
        return Bounce.HARD if about_recipient else Bounce.POLICY
    return Bounce.FAILED
