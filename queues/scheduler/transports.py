"""Talking to sending services: SMTP accounts and Django e-mail backends (ESPs).

A transport sends one rendered mail and returns a ``Delivery``: sent, or a
transient or permanent failure with the server's code and reply, and whether
the failure is the service's fault (it counts towards the service backing
off) or the recipient's.

What is transient and what is permanent, by SMTP stage:

- connecting, TLS, AUTH, MAIL FROM: the service's problem; transient for the
  subtask (another attempt may go through another service);
- RCPT TO and the end of DATA: 4xx transient, 5xx permanent (the reply is kept);
  a 5xx whose enhanced code is 5.7.x (policy, spam, authentication) counts
  against the service too;
- a timeout or dropped connection after DATA: outcome unknown, transient
  (the retry carries the same Message-ID, so a duplicate is recognisable).

Every reply is classified (deliverability.bounces): ``Delivery.bounce`` says
whether a refusal was a hard bounce (no such address), a policy refusal, a
temporary one or another permanent failure.
"""

from __future__ import annotations

import inspect
import logging
import re
import smtplib
import ssl
import threading
import time
import uuid
from dataclasses import dataclass

from django.core.mail import EmailMultiAlternatives, get_connection
from django.utils.module_loading import import_string

from common.field_keys import FieldKeyError
from deliverability.bounces import Bounce, bounce_class
from queues.backend_allowlist import backend_refusal
from queues.models import EmailService
from queues.scheduler.messages import RenderedMail
from queues.scheduler.slots import SlotStart, StartMissed

logger = logging.getLogger(__name__)

SENT = "sent"
TRANSIENT = "transient"
PERMANENT = "permanent"

# A reused connection idle longer than this is checked with NOOP first: relays
# close idle sessions, and a failure before MAIL FROM is cheap to retry.
IDLE_CHECK_SECONDS = 20.0
# A whole send (connect, envelope, DATA, the final reply) may take this many
# of the service's socket timeouts, never more: the worker's deadline, the
# backend bound below and recovery's horizons all count on it.
SEND_TIMEOUTS = 3


@dataclass(frozen=True)
class Delivery:
    outcome: str
    code: int | None = None
    reply: str = ""
    service_fault: bool = False
    # The conversation got past DATA and then broke: the server may have the mail.
    unknown: bool = False
    # What the refusal says about the recipient (deliverability.bounces); empty when there was no refusal.
    bounce: str = Bounce.NONE


@dataclass(frozen=True)
class ServiceConfig:
    """A snapshot of what a transport needs; ``version`` changes when the service is edited."""

    id: uuid.UUID
    name: str
    transport: str
    host: str
    port: int
    username: str
    password: str
    security: str
    timeout: float
    backend_path: str
    backend_options: dict
    from_email: str
    version: str
    max_connections: int = 20
    # Why this service cannot send at all (its stored credentials cannot be decrypted); empty when it can.
    problem: str = ""

    @classmethod
    def from_service(cls, service: EmailService) -> ServiceConfig:
        """The service's settings; a service whose secrets the keys cannot decrypt gets a ``problem`` instead."""
        try:
            password, options, problem = service.password, dict(service.backend_options or {}), ""
        except FieldKeyError as exc:
            password, options, problem = "", {}, f"the service's credentials are unusable: {exc}"
        return cls(
            id=service.pk,
            name=service.name,
            transport=service.transport,
            host=service.host,
            port=service.port,
            username=service.username,
            password=password,
            security=service.security,
            timeout=service.timeout,
            backend_path=service.backend_path,
            backend_options=options,
            from_email=service.from_email,
            version=service.updated_at.isoformat() if service.updated_at else "",
            max_connections=max(1, service.max_connections),
            problem=problem,
        )

    def __repr__(self) -> str:  # never print the password
        return f"ServiceConfig({self.name!r}, {self.transport}, {self.host}:{self.port})"


def _decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class _StageError(Exception):
    def __init__(self, delivery: Delivery, *, after_data: bool = False) -> None:
        super().__init__(delivery.reply)
        self.delivery = delivery
        # After DATA the server may hold the mail: this attempt must not send it again.
        self.after_data = after_data


class SmtpTransport:
    """One SMTP session to one service, kept open between sends."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._smtp: smtplib.SMTP | None = None
        self._last_used = 0.0
        self._deadline: float | None = None
        self._slot: SlotStart | None = None

    def send(self, mail: RenderedMail, *, deadline: float | None = None, slot: SlotStart | None = None) -> Delivery:
        """Send one mail; with a deadline (time.monotonic()), every socket wait ends by then.

        With a rate ``slot``, MAIL FROM goes out when the slot allows (the
        connection is opened before waiting), or nothing goes out and
        StartMissed is raised.
        """
        self._deadline = deadline
        self._slot = slot
        reused = self._smtp is not None
        try:
            self._ensure_open()
            return self._transaction(mail)
        except _StageError as exc:
            if reused and exc.delivery.code is None and not exc.after_data:
                # The server dropped a reused session before it accepted anything: reconnect once.
                self.close()
                if slot is not None:
                    # Its MAIL FROM may have gone out: a second one now would not keep the rate.
                    raise StartMissed("the kept-open connection had been closed by the server") from None
                try:
                    self._ensure_open()
                    return self._transaction(mail)
                except _StageError as again:
                    exc = again
            if exc.delivery.code in (None, 421):
                self.close()
            return exc.delivery

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _timeout(self) -> float:
        """The socket timeout for the next wait: the service's, cut to what is left before the deadline."""
        if self._deadline is None:
            return self.config.timeout
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the send's deadline passed")
        return min(self.config.timeout, left)

    def _arm(self, smtp: smtplib.SMTP) -> None:
        if smtp.sock is not None:
            smtp.sock.settimeout(self._timeout())

    def _ensure_open(self) -> None:
        if self._smtp is not None and time.monotonic() - self._last_used > IDLE_CHECK_SECONDS:
            try:
                self._arm(self._smtp)
                code, _ = self._smtp.noop()
            except (smtplib.SMTPException, OSError):
                code = 0
            if code != 250:
                self.close()
        if self._smtp is not None:
            return
        c = self.config
        if c.problem:
            raise _StageError(Delivery(TRANSIENT, None, c.problem, service_fault=True))
        try:
            if c.security == EmailService.Security.SSL:
                smtp = smtplib.SMTP_SSL(c.host, c.port, timeout=self._timeout(), context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=self._timeout())
            try:
                self._arm(smtp)
                smtp.ehlo_or_helo_if_needed()
                if c.security == EmailService.Security.STARTTLS:
                    self._arm(smtp)
                    smtp.starttls(context=ssl.create_default_context())
                    self._arm(smtp)
                    smtp.ehlo()
                if c.username:
                    self._arm(smtp)
                    self._login(smtp)
            except BaseException:
                smtp.close()
                raise
        except smtplib.SMTPResponseException as exc:
            raise _StageError(_service_reply(exc.smtp_code, exc.smtp_error)) from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise _StageError(Delivery(TRANSIENT, None, f"connection failed: {exc}", service_fault=True)) from None
        self._smtp = smtp

    def _login(self, smtp: smtplib.SMTP) -> None:
        """AUTH PLAIN when offered (one exchange, a clean 535 on bad credentials), else smtplib's choice."""
        if "plain" not in smtp.esmtp_features.get("auth", "").lower().split():
            smtp.login(self.config.username, self.config.password)
            return
        smtp.user, smtp.password = self.config.username, self.config.password
        code, reply = smtp.auth("PLAIN", smtp.auth_plain, initial_response_ok=True)
        if code not in (235, 503):
            raise smtplib.SMTPAuthenticationError(code, reply)

    def _transaction(self, mail: RenderedMail) -> Delivery:
        smtp = self._smtp
        assert smtp is not None
        slot, self._slot = self._slot, None  # one MAIL FROM per slot
        if slot is not None:
            slot.enter()
        self._last_used = time.monotonic()
        try:
            mail_reply, rcpt_reply, data_reply = self._envelope(smtp, mail, self._arm, slot)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _StageError(Delivery(TRANSIENT, None, f"connection lost: {exc}", service_fault=True)) from None
        finally:
            if slot is not None:
                slot.written()  # whatever ended the envelope (a deadline, say): the gate must not wait for it
        if mail_reply[0] != 250:
            self._rset()
            raise _StageError(_service_reply(*mail_reply))
        if rcpt_reply[0] not in (250, 251):
            self._rset()
            raise _StageError(_reply_delivery(*rcpt_reply))
        if data_reply[0] != 354:
            self._rset()
            raise _StageError(_reply_delivery(*data_reply))
        try:
            self._arm(smtp)
            smtp.send(_dot_stuffed(mail.data))
            self._arm(smtp)
            code, reply = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            delivery = Delivery(TRANSIENT, None, f"no reply after DATA: {exc}", service_fault=True, unknown=True)
            raise _StageError(delivery, after_data=True) from None
        if code != 250:
            raise _StageError(_reply_delivery(code, reply))
        return Delivery(SENT, code, _decode(reply))

    @staticmethod
    def _envelope(
        smtp: smtplib.SMTP, mail: RenderedMail, arm, slot: SlotStart | None = None
    ) -> tuple[tuple[int, bytes], ...]:
        """MAIL FROM, RCPT TO and DATA; in one write when the server offers PIPELINING (RFC 2920).

        Commands go out with putcmd/send, not smtp.mail()/rcpt(): those
        re-parse each address with email.utils (about 0.2 ms each), and ours
        are validated already. A rate slot is told as soon as MAIL FROM is on
        the wire (or failed to go): the service's next send may start from then.
        """
        commands = f"MAIL FROM:<{mail.from_email}>\r\nRCPT TO:<{mail.recipient}>\r\nDATA\r\n"
        if smtp.has_extn("pipelining"):
            arm(smtp)
            try:
                smtp.send(commands)
            finally:
                if slot is not None:
                    slot.written()
            replies = []
            for _ in range(3):
                arm(smtp)
                replies.append(smtp.getreply())
            replies = tuple(replies)
            if replies[2][0] == 354 and (replies[0][0] != 250 or replies[1][0] not in (250, 251)):
                # A server that took DATA although the envelope failed: end the empty message.
                smtp.send(b".\r\n")
                smtp.getreply()
            return replies
        replies = []
        for command in commands.split("\r\n")[:3]:
            arm(smtp)
            try:
                smtp.send(command + "\r\n")
            finally:
                if slot is not None:
                    slot.written()
                    slot = None
            arm(smtp)
            replies.append(smtp.getreply())
            if replies[-1][0] >= 400:
                break
        while len(replies) < 3:
            replies.append((0, b"not sent"))
        return tuple(replies)

    def _rset(self) -> None:
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()


_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def _dot_stuffed(data: bytes) -> bytes:
    """The message as SMTP DATA wants it: leading dots doubled, CRLF-ended, then the lone dot."""
    data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _reply_delivery(code: int, reply: bytes | str, *, about_recipient: bool = True) -> Delivery:
    """A refusal at RCPT TO or the end of DATA (``about_recipient``), or of the sender (a backend's MAIL FROM)."""
    text = _decode(reply)
    bounce = bounce_class(code, text, about_recipient=about_recipient)
    if 400 <= code < 500:
        # Temporary refusals (throttling, resources, 421 closing) count against
        # the service: a run of them makes it back off.
        return Delivery(TRANSIENT, code, text, service_fault=True, bounce=bounce)
    if code >= 500:
        # A policy refusal (5.7.x: the sender, its IP or the content) is the
        # service's standing, not the recipient's: it counts towards back-off.
        return Delivery(PERMANENT, code, text, service_fault=bounce == Bounce.POLICY, bounce=bounce)
    return Delivery(TRANSIENT, code, text, service_fault=True, bounce=bounce)


def _service_reply(code: int, reply: bytes | str) -> Delivery:
    """A refusal of the session or the sender (greeting, TLS, AUTH, MAIL FROM): transient, the service's fault."""
    text = _decode(reply)
    return Delivery(TRANSIENT, code, text, service_fault=True, bounce=bounce_class(code, text, about_recipient=False))


class BackendTransport:
    """A Django e-mail backend (for instance an ESP's) with its connection kept open.

    A backend has no deadline of its own: it gets the service's timeout where
    it takes one (Django's SMTP backend: ``timeout``), and each call runs on a
    daemon thread, waited for no longer than the send's deadline. A call that
    overruns is abandoned (its backend closed once it returns, never reused;
    a daemon thread never holds up the process's exit) and reported as a
    transient failure whose outcome is unknown.
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._backend = None
        # Judged once per transport (pooled, reopened when the service is edited), not per send.
        self._refusal = config.problem or backend_refusal(config.backend_path)

    def send(self, mail: RenderedMail, *, deadline: float | None = None, slot: SlotStart | None = None) -> Delivery:
        if deadline is None:
            deadline = time.monotonic() + SEND_TIMEOUTS * self.config.timeout
        if slot is not None:
            slot.enter()  # the call starts now: the service's next send may start a rate from here
            slot.written()
        call = _BackendCall(self, self._backend, mail)
        self._backend = None  # the call owns it until it hands it back
        finished = call.wait(deadline - time.monotonic())
        if finished is None:
            budget = SEND_TIMEOUTS * self.config.timeout
            return Delivery(
                TRANSIENT,
                None,
                f"the backend did not finish within the send's deadline ({budget:g} s)",
                service_fault=True,
                unknown=True,
            )
        delivery, self._backend = finished
        return delivery

    def call(self, backend, mail: RenderedMail) -> tuple[Delivery, object | None]:
        """One send through ``backend`` (opened first if None); returns the backend still usable, or None."""
        if refusal := self._refusal:
            # Checked before anything is imported: the path names code to run. The service is at
            # fault (it backs off and raises an alert); the mail may still go through another one.
            return Delivery(TRANSIENT, None, refusal, service_fault=True), None
        try:
            if backend is None:
                backend = get_connection(self.config.backend_path, fail_silently=False, **self._options())
                backend.open()
            sent = backend.send_messages([self._message(mail, backend)])
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            return _reply_delivery(code, reply), backend
        except smtplib.SMTPResponseException as exc:
            _close_quietly(backend)
            # Only a refusal of the message itself is about the recipient; not one of AUTH or the sender.
            about_recipient = isinstance(exc, smtplib.SMTPDataError)
            return _reply_delivery(exc.smtp_code, exc.smtp_error, about_recipient=about_recipient), None
        except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:
            # Where the conversation stood is the backend's secret: the server may have the mail.
            _close_quietly(backend)
            return Delivery(TRANSIENT, None, f"{type(exc).__name__}: {exc}", service_fault=True, unknown=True), None
        except Exception as exc:  # third-party backends raise anything: the service is at fault
            _close_quietly(backend)
            return Delivery(TRANSIENT, None, f"{type(exc).__name__}: {exc}", service_fault=True), None
        if not sent:
            return Delivery(TRANSIENT, None, "the backend reported nothing sent", service_fault=True), backend
        return Delivery(SENT, 250, "accepted by backend"), backend

    def _options(self) -> dict:
        """The service's backend options, plus its timeout for a backend that takes one."""
        options = dict(self.config.backend_options)
        backend_class = import_string(self.config.backend_path)
        if "timeout" in inspect.signature(backend_class.__init__).parameters:
            options.setdefault("timeout", self.config.timeout)
        return options

    @staticmethod
    def _message(mail: RenderedMail, backend) -> EmailMultiAlternatives:
        message = EmailMultiAlternatives(
            subject=mail.subject,
            body=mail.text or "",
            from_email=mail.from_header,
            to=[mail.recipient],
            reply_to=[mail.reply_to] if mail.reply_to else None,
            headers={"Message-ID": mail.message_id, **dict(mail.extra_headers)},
            connection=backend,
        )
        if mail.html is not None:
            if mail.text is None:
                message.body = mail.html
                message.content_subtype = "html"
            else:
                message.attach_alternative(mail.html, "text/html")
        return message

    def close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            _close_quietly(backend)


class _BackendCall:
    """One backend send on its own daemon thread; abandoned calls close their backend when they return."""

    def __init__(self, transport: BackendTransport, backend, mail: RenderedMail) -> None:
        self._lock = threading.Lock()
        self._result: tuple[Delivery, object | None] | None = None
        self._abandoned = False
        self._thread = threading.Thread(
            target=self._run, args=(transport, backend, mail), name=f"backend-{transport.config.name}", daemon=True
        )
        self._thread.start()

    def _run(self, transport: BackendTransport, backend, mail: RenderedMail) -> None:
        result = transport.call(backend, mail)
        with self._lock:
            if not self._abandoned:
                self._result = result
                return
        if result[1] is not None:
            _close_quietly(result[1])

    def wait(self, timeout: float) -> tuple[Delivery, object | None] | None:
        """The call's outcome and backend, or None if it did not finish in time (then it is abandoned)."""
        self._thread.join(max(0.0, timeout))
        with self._lock:
            if self._result is None:
                self._abandoned = True
            return self._result


def _close_quietly(backend) -> None:
    if backend is None:  # it never opened
        return
    try:
        backend.close()
    except Exception:  # closing a broken backend must not stop the worker
        logger.debug("closing a backend failed", exc_info=True)


def open_transport(config: ServiceConfig) -> SmtpTransport | BackendTransport:
    if config.transport == EmailService.Transport.BACKEND:
        return BackendTransport(config)
    return SmtpTransport(config)
