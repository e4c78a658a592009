"""Transports against a real SMTP server (aiosmtpd) and a Django e-mail backend."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
import uuid

import pytest
from django.core import mail as django_mail

from queues.scheduler.messages import RenderedMail
from queues.scheduler.slots import SlotStart, StartGate, StartMissed
from queues.scheduler.transports import PERMANENT, SENT, TRANSIENT, ServiceConfig, open_transport
from tests.faults.harness import TarPit
from tests.processes import child_environment
from tests.schedulers import ROOT


def config(port: int, **overrides) -> ServiceConfig:
    fields = {
        "id": uuid.uuid4(),
        "name": "test",
        "transport": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "username": "",
        "password": "",
        "security": "none",
        "timeout": 5.0,
        "backend_path": "",
        "backend_options": {},
        "from_email": "svc@sender.example",
        "version": "1",
    }
    fields.update(overrides)
    return ServiceConfig(**fields)


def mail(recipient: str = "ann@example.org", message_id: str = "<m1@edm.test>") -> RenderedMail:
    data = (
        f"From: svc@sender.example\r\nTo: {recipient}\r\nSubject: hi\r\nMessage-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nline one\r\n.dot line\r\n"
    ).encode()
    return RenderedMail(
        from_email="svc@sender.example",
        recipient=recipient,
        message_id=message_id,
        subject="hi",
        text="line one\n.dot line\n",
        html=None,
        from_header="svc@sender.example",
        reply_to="",
        data=data,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sends_and_reuses_one_connection(smtp_sink):
    smtp_sink.keep_content = True
    transport = open_transport(config(smtp_sink.port))
    first = transport.send(mail(message_id="<a@t>"))
    second = transport.send(mail(message_id="<b@t>"))
    transport.close()

    assert (first.outcome, first.code, second.outcome) == (SENT, 250, SENT)
    records = smtp_sink.snapshot()
    assert [r.message_id for r in records] == ["<a@t>", "<b@t>"]
    assert records[0].mail_from == "svc@sender.example"
    assert b"\r\n.dot line\r\n" in records[0].content  # dot-stuffing undone by the server
    assert smtp_sink.opened == 1  # counted at the server: one session for both mails


@pytest.mark.parametrize(
    ("recipient", "outcome", "code", "fault", "bounce"),
    [
        pytest.param("tempfail@example.org", TRANSIENT, 451, True, "soft", id="4xx-at-rcpt"),
        pytest.param("permfail@example.org", PERMANENT, 550, False, "hard", id="5.1.1-at-rcpt"),
        # 5.7.1 rejected as spam: the sender's standing, so the service's fault.
        pytest.param("datafail@example.org", PERMANENT, 554, True, "policy", id="5.7.1-after-data"),
    ],
)
def test_server_replies_are_classified(smtp_sink, recipient, outcome, code, fault, bounce):
    transport = open_transport(config(smtp_sink.port))
    delivery = transport.send(mail(recipient))
    assert (delivery.outcome, delivery.code, delivery.service_fault, delivery.bounce) == (outcome, code, fault, bounce)
    assert delivery.reply  # the server's text is kept
    # The session is still usable after a refusal.
    assert transport.send(mail()).outcome == SENT
    transport.close()


def test_a_refused_connection_is_a_transient_service_fault():
    delivery = open_transport(config(free_port())).send(mail())
    assert (delivery.outcome, delivery.code, delivery.service_fault) == (TRANSIENT, None, True)
    assert delivery.reply.startswith("connection failed")


def test_a_session_dropped_between_sends_is_reopened_once(smtp_sink):
    transport = open_transport(config(smtp_sink.port))
    assert transport.send(mail(message_id="<1@t>")).outcome == SENT
    smtp_sink.stop()  # cuts the open session
    smtp_sink.start()  # same port, fresh server
    assert transport.send(mail(message_id="<2@t>")).outcome == SENT
    assert [r.message_id for r in smtp_sink.snapshot()] == ["<1@t>", "<2@t>"]


def test_no_reply_after_data_within_the_timeout_is_transient_and_not_resent(smtp_sink):
    smtp_sink.latency = 1.5
    transport = open_transport(config(smtp_sink.port, timeout=0.5))
    delivery = transport.send(mail())
    assert (delivery.outcome, delivery.code) == (TRANSIENT, None)
    assert delivery.reply.startswith("no reply after DATA")
    smtp_sink.latency = 0
    time.sleep(1.5)
    assert len(smtp_sink.snapshot()) == 1  # the server got it once; this attempt did not send it again


def test_a_django_backend_service_sends_through_the_backend(settings):
    transport = open_transport(
        config(0, transport="backend", backend_path="django.core.mail.backends.locmem.EmailBackend")
    )
    delivery = transport.send(mail())
    assert delivery.outcome == SENT
    (sent,) = django_mail.outbox
    assert sent.to == ["ann@example.org"]
    assert sent.extra_headers["Message-ID"] == "<m1@edm.test>"
    assert sent.message()["Message-ID"] == "<m1@edm.test>"


def test_a_backend_that_raises_is_a_transient_service_fault():
    # Allowed (anymail.backends.*) but not importable.
    transport = open_transport(config(0, transport="backend", backend_path="anymail.backends.no_such_esp.EmailBackend"))
    delivery = transport.send(mail())
    assert (delivery.outcome, delivery.service_fault) == (TRANSIENT, True)
    assert delivery.reply == "ModuleNotFoundError: No module named 'anymail.backends.no_such_esp'"


def test_a_backend_not_allowed_is_refused_before_it_is_imported(settings):
    settings.EDM_ALLOWED_BACKENDS = ["anymail.backends.*"]
    transport = open_transport(
        config(0, transport="backend", backend_path="django.core.mail.backends.locmem.EmailBackend")
    )
    delivery = transport.send(mail())
    assert (delivery.outcome, delivery.code, delivery.service_fault) == (TRANSIENT, None, True)
    assert delivery.reply == (
        "the backend django.core.mail.backends.locmem.EmailBackend is not allowed "
        "(EDM_ALLOWED_BACKENDS: anymail.backends.*)"
    )
    assert django_mail.outbox == []


def test_the_password_never_shows_in_the_config_repr():
    assert "s3cret" not in repr(config(25, password="s3cret"))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_context(certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_tls_and_login_with_certificate_verification(certificate, monkeypatch, mode):
    from queues.sink import SmtpSink

    # The client verifies the server's certificate: trust our self-signed one.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    tls = {"starttls_context" if mode == "starttls" else "implicit_tls_context": server_context(certificate)}
    with SmtpSink(credentials={"relay-user": "relay-pass"}, **tls) as sink:
        good = open_transport(config(sink.port, security=mode, username="relay-user", password="relay-pass"))
        assert good.send(mail()).outcome == SENT
        good.close()
        bad = open_transport(config(sink.port, security=mode, username="relay-user", password="wrong"))
        refused = bad.send(mail())
        assert (refused.outcome, refused.code, refused.service_fault) == (TRANSIENT, 535, True), refused.reply
        assert len(sink.snapshot()) == 1


def test_an_untrusted_certificate_is_refused(certificate):
    from queues.sink import SmtpSink

    with SmtpSink(starttls_context=server_context(certificate)) as sink:
        delivery = open_transport(config(sink.port, security="starttls")).send(mail())
    assert (delivery.outcome, delivery.service_fault) == (TRANSIENT, True)
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.reply
    assert sink.snapshot() == []


SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def smtp_backend(port: int, **options) -> ServiceConfig:
    return config(
        port,
        transport="backend",
        backend_path=SMTP_BACKEND,
        backend_options={"host": "127.0.0.1", "port": port, **options},
        timeout=0.5,
    )


def test_a_backend_that_takes_a_timeout_gets_the_services():
    # Django's SMTP backend against a server that never greets: EMAIL_TIMEOUT (10 s) unless told otherwise.
    tarpit = TarPit()
    try:
        transport = open_transport(smtp_backend(tarpit.port))
        delivery = transport.send(mail())
        transport.close()
    finally:
        tarpit.close()
    assert (delivery.outcome, delivery.code, delivery.service_fault, delivery.unknown) == (TRANSIENT, None, True, True)
    assert delivery.reply == "SMTPServerDisconnected: Connection unexpectedly closed: timed out"
    assert len(tarpit.held) == 1


def test_a_backend_call_that_overruns_the_deadline_is_an_unknown_outcome():
    # The operator's own, longer, timeout: the whole call is still bounded by the send's deadline.
    tarpit = TarPit()
    try:
        transport = open_transport(smtp_backend(tarpit.port, timeout=60))
        delivery = transport.send(mail())
        transport.close()
    finally:
        tarpit.close()
    assert (delivery.outcome, delivery.code, delivery.service_fault, delivery.unknown) == (TRANSIENT, None, True, True)
    assert delivery.reply == "the backend did not finish within the send's deadline (1.5 s)"


ABANDON_AND_EXIT = """
import sys, time, uuid
import django
django.setup()
from queues.scheduler.messages import RenderedMail
from queues.scheduler.transports import ServiceConfig, open_transport
port = int(sys.argv[1])
config = ServiceConfig(
    id=uuid.uuid4(), name="t", transport="backend", host="", port=0, username="", password="", security="none",
    timeout=0.2, backend_path="django.core.mail.backends.smtp.EmailBackend",
    backend_options={"host": "127.0.0.1", "port": port, "timeout": 600}, from_email="a@b.example", version="1",
)
mail = RenderedMail("a@b.example", "c@d.example", "<m@t>", "s", "b", None, "a@b.example", "", b"x")
print(open_transport(config).send(mail).unknown)
"""


def test_an_abandoned_backend_call_does_not_hold_up_the_process_exit():
    tarpit = TarPit()
    try:
        done = subprocess.run(
            [sys.executable, "-c", ABANDON_AND_EXIT, str(tarpit.port)],
            env=child_environment(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,  # the backend's own timeout (600 s) would hold a non-daemon thread far longer
        )
    finally:
        tarpit.close()
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr


def test_a_backend_service_sends_through_a_real_smtp_server(smtp_sink):
    transport = open_transport(smtp_backend(smtp_sink.port))
    assert transport.send(mail(message_id="<be@t>")).outcome == SENT
    transport.close()
    assert [r.message_id for r in smtp_sink.snapshot()] == ["<be@t>"]


def test_a_send_that_fails_after_entering_its_rate_slot_leaves_the_services_gate_open(smtp_sink):
    transport = open_transport(config(smtp_sink.port))
    assert transport.send(mail(message_id="<1@t>")).outcome == SENT  # the session is open
    gate = StartGate()
    now = time.monotonic()
    # The deadline has passed: the envelope fails after the slot let it start (and the slot is not tried again).
    with pytest.raises(StartMissed):
        transport.send(mail(message_id="<2@t>"), deadline=now - 1, slot=SlotStart(gate, (now, now + 5), 0.0))
    now = time.monotonic()
    sent = transport.send(mail(message_id="<3@t>"), slot=SlotStart(gate, (now, now + 0.5), 0.0))
    assert sent.outcome == SENT  # not held until its window closed by a start that never wrote
