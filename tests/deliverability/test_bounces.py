"""The bounce classifier: each SMTP reply, labelled with the class it must get."""

from __future__ import annotations

import pytest

from deliverability.bounces import Bounce, bounce_class, enhanced_code


@pytest.mark.parametrize(
    ("code", "reply", "expected"),
    [
        # Hard: the recipient's address does not (or cannot) exist.
        pytest.param(550, "5.1.1 user unknown", Bounce.HARD, id="5.1.1-bad-mailbox"),
        pytest.param(550, "5.1.2 Host unknown", Bounce.HARD, id="5.1.2-bad-system"),
        pytest.param(553, "5.1.3 Bad destination mailbox address syntax", Bounce.HARD, id="5.1.3-bad-syntax"),
        pytest.param(550, "5.1.6 Mailbox has moved", Bounce.HARD, id="5.1.6-moved"),
        pytest.param(556, "5.1.10 Recipient address has null MX", Bounce.HARD, id="5.1.10-null-mx"),
        pytest.param(
            550,
            "5.1.1 The email account that you tried to reach does not exist.\n5.1.1 Please try again.",
            Bounce.HARD,
            id="multiline-gmail",
        ),
        pytest.param(550, "550 5.1.1 <a@b.example>: Recipient address rejected", Bounce.HARD, id="basic-code-kept"),
        pytest.param(550, "550-5.1.1 no such user", Bounce.HARD, id="basic-code-continuation"),
        pytest.param(550, "  5.1.1 user unknown", Bounce.HARD, id="leading-space"),
        # Policy: the sender, its IP, its authentication or the content; the service's standing.
        pytest.param(554, "5.7.1 Message rejected as spam", Bounce.POLICY, id="5.7.1-spam"),
        pytest.param(550, "5.7.26 Unauthenticated email is not accepted", Bounce.POLICY, id="5.7.26-dmarc"),
        pytest.param(535, "5.7.8 Authentication credentials invalid", Bounce.POLICY, id="5.7.8-auth"),
        pytest.param(553, "5.1.7 Bad sender mailbox address syntax", Bounce.POLICY, id="5.1.7-sender-syntax"),
        pytest.param(553, "5.1.8 Sender address domain not found", Bounce.POLICY, id="5.1.8-sender-domain"),
        # Soft: temporary, retried.
        pytest.param(450, "4.2.0 Mailbox busy", Bounce.SOFT, id="4.2.0"),
        pytest.param(451, "4.3.0 Temporary failure", Bounce.SOFT, id="4.3.0"),
        pytest.param(421, "Service not available, closing channel", Bounce.SOFT, id="421-no-enhanced"),
        pytest.param(450, "5.1.1 user unknown", Bounce.SOFT, id="4xx-with-contradicting-5.1.1"),
        # Other permanent failures: failed, nothing suppressed.
        pytest.param(552, "5.2.2 Mailbox full", Bounce.FAILED, id="5.2.2-full"),
        pytest.param(552, "5.3.4 Message too big", Bounce.FAILED, id="5.3.4-too-big"),
        pytest.param(554, "5.4.4 Unable to route", Bounce.FAILED, id="5.4.4-route"),
        pytest.param(550, "5.1.0 Address rejected", Bounce.FAILED, id="5.1.0-unspecified"),
        pytest.param(550, "5.1.4 Destination mailbox address ambiguous", Bounce.FAILED, id="5.1.4-ambiguous"),
        pytest.param(550, "5.1.99 Something about the address", Bounce.FAILED, id="5.1.99-unknown-detail"),
        # A plain 5xx: the text is not trusted, however sure it sounds.
        pytest.param(550, "User unknown", Bounce.FAILED, id="550-user-unknown-text"),
        pytest.param(550, "No such user here", Bounce.FAILED, id="550-no-such-user-text"),
        pytest.param(550, "Requested action not taken: mailbox unavailable", Bounce.FAILED, id="550-unavailable"),
        pytest.param(550, "4.1.1 user unknown", Bounce.FAILED, id="5xx-with-contradicting-4.1.1"),
        pytest.param(550, "2.1.5 ok", Bounce.FAILED, id="5xx-with-success-code"),
        pytest.param(550, "5.1.1.2 odd", Bounce.FAILED, id="four-part-code"),
        pytest.param(550, "v5.1.1 odd", Bounce.FAILED, id="code-not-at-start"),
        pytest.param(550, "", Bounce.FAILED, id="5xx-empty-text"),
        # Not a refusal at all.
        pytest.param(250, "2.0.0 OK queued", Bounce.NONE, id="250-accepted"),
        pytest.param(None, "connection refused", Bounce.NONE, id="no-reply"),
        pytest.param(0, "not sent", Bounce.NONE, id="no-code"),
    ],
)
def test_a_reply_about_the_recipient_is_classified(code, reply, expected):
    assert bounce_class(code, reply) == expected


@pytest.mark.parametrize(
    ("code", "reply", "expected"),
    [
        # At MAIL FROM a 5.1.1 names the sender's mailbox: never the recipient's hard bounce.
        pytest.param(550, "5.1.1 Sender address rejected: user unknown", Bounce.POLICY, id="mail-from-5.1.1"),
        pytest.param(553, "5.1.8 Sender domain unknown", Bounce.POLICY, id="mail-from-5.1.8"),
        pytest.param(550, "5.7.1 Sender not permitted", Bounce.POLICY, id="mail-from-5.7.1"),
        pytest.param(421, "4.7.0 Try again later", Bounce.SOFT, id="greeting-4.7.0"),
        pytest.param(554, "5.3.0 other", Bounce.FAILED, id="mail-from-5.3.0"),
    ],
)
def test_a_reply_about_the_sender_is_never_a_hard_bounce(code, reply, expected):
    assert bounce_class(code, reply, about_recipient=False) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param("5.1.1 user unknown", (5, 1, 1), id="plain"),
        pytest.param("5.1.10", (5, 1, 10), id="alone-two-digit-detail"),
        pytest.param("4.7.123 x", (4, 7, 123), id="three-digit-detail"),
        pytest.param("5.1234.1 x", None, id="four-digit-subject"),
        pytest.param("3.1.1 x", None, id="class-3"),
        pytest.param("user 5.1.1 unknown", None, id="not-at-start"),
    ],
)
def test_the_enhanced_code_is_read_from_the_start_of_the_reply(reply, expected):
    assert enhanced_code(reply) == expected
