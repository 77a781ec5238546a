"""The email channel against a real SMTP server (aiosmtpd) on localhost: plain, STARTTLS, SSL."""

from __future__ import annotations

import email
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from queuelens.alerting.channels import EmailNotifier
from queuelens.alerting.notify import Notification, NotificationStatus, Secret

from .test_notify_http import NOTIFICATION

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp")

USERNAME, PASSWORD = "queuelens", "smtp-pa55word"


@dataclass
class Mailbox:
    """What the SMTP server accepted: envelope sender, recipients and the parsed message."""

    port: int
    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    good = auth_data.login == USERNAME.encode() and auth_data.password == PASSWORD.encode()
    # handled=False: let aiosmtpd answer a failure with 535 itself.
    return aiosmtpd_smtp.AuthResult(success=good, handled=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    mailbox = Mailbox(_free_port())
    controller = aiosmtpd_controller.Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    yield mailbox
    controller.stop()


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[Mailbox]:
    mailbox = Mailbox(_free_port())
    controller = aiosmtpd_controller.Controller(
        mailbox,
        hostname="127.0.0.1",
        port=mailbox.port,
        tls_context=_server_context(certificate),
        require_starttls=True,
        authenticator=_authenticate,
    )
    controller.start()
    yield mailbox
    controller.stop()


@pytest.fixture
def ssl_server(certificate: tuple[Path, Path]) -> Iterator[Mailbox]:
    mailbox = Mailbox(_free_port())
    controller = aiosmtpd_controller.Controller(
        mailbox,
        hostname="127.0.0.1",
        port=mailbox.port,
        ssl_context=_server_context(certificate),
        authenticator=_authenticate,
        auth_require_tls=False,  # TLS from the first byte, which aiosmtpd cannot see
    )
    controller.start()
    yield mailbox
    controller.stop()


def test_plain_smtp_delivers_subject_body_and_recipients(smtp_server: Mailbox) -> None:
    notifier = EmailNotifier(
        name="mail",
        host="127.0.0.1",
        port=smtp_server.port,
        security="none",
        sender="queuelens@example.com",
        to=("ops@example.com", "oncall@example.com"),
    )

    delivery = notifier.send(NOTIFICATION)

    assert (delivery.receiver, delivery.ok, delivery.attempts) == ("mail", True, 1), delivery
    [(mail_from, rcpt_tos, message)] = smtp_server.received
    assert mail_from == "queuelens@example.com"
    assert rcpt_tos == ["ops@example.com", "oncall@example.com"]
    assert message["Subject"] == ("[FIRING] HighFailureRate (critical): Failure rate 12% on emails")
    assert message["To"] == "ops@example.com, oncall@example.com"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().replace("\r\n", "\n") == (
        "Failure rate 12% on emails\n\n"
        "Above 5% for 5m\n\n"
        "Status: firing\n"
        "Severity: critical\n"
        "Value: 0.12\n"
        "Threshold: 0.05\n"
        "Started: 2026-01-02T03:04:05+00:00\n"
        "Labels: app=shop, queue=emails\n\n"
        "Dashboard: http://localhost:8000/queues/emails\n\n"
        "Fingerprint: fp-1234\n"
    )
    html_text = html.get_content()
    assert "<h2>[FIRING] HighFailureRate (critical)</h2>" in html_text
    assert "<a href='http://localhost:8000/queues/emails'>Open dashboard</a>" in html_text


def test_html_part_escapes_alert_text(smtp_server: Mailbox) -> None:
    hostile = Notification(
        NotificationStatus.resolved, "X", "warning", "fp", "g",
        annotations={"summary": "<script>alert(1)</script>"},
    )  # fmt: skip
    notifier = EmailNotifier(
        name="mail", host="127.0.0.1", port=smtp_server.port, security="none",
        sender="q@example.com", to=("ops@example.com",),
    )  # fmt: skip

    assert notifier.send(hostile).ok
    html = smtp_server.received[0][2].get_body(("html",))
    assert html is not None
    assert "&lt;script&gt;" in html.get_content()
    assert "<script>" not in html.get_content()


def test_starttls_with_login(starttls_server: Mailbox, certificate: tuple[Path, Path]) -> None:
    notifier = EmailNotifier(
        name="mail",
        host="127.0.0.1",
        port=starttls_server.port,
        security="starttls",
        username=USERNAME,
        password=Secret(PASSWORD),
        ca_file=str(certificate[0]),
        sender="queuelens@example.com",
        to=("ops@example.com",),
    )

    delivery = notifier.send(NOTIFICATION)

    assert delivery.ok, delivery
    assert starttls_server.received[0][1] == ["ops@example.com"]


def test_implicit_ssl_with_login(ssl_server: Mailbox, certificate: tuple[Path, Path]) -> None:
    notifier = EmailNotifier(
        name="mail",
        host="127.0.0.1",
        port=ssl_server.port,
        security="ssl",
        username=USERNAME,
        password=Secret(PASSWORD),
        ca_file=str(certificate[0]),
        sender="queuelens@example.com",
        to=("ops@example.com",),
    )

    assert notifier.send(NOTIFICATION).ok
    assert ssl_server.received[0][2]["From"] == "queuelens@example.com"


def test_wrong_password_fails_without_showing_it(
    starttls_server: Mailbox, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    notifier = EmailNotifier(
        name="mail", host="127.0.0.1", port=starttls_server.port, username=USERNAME,
        password=Secret("wrong-pa55word"), ca_file=str(certificate[0]),
        sender="q@example.com", to=("ops@example.com",),
    )  # fmt: skip

    delivery = notifier.send(NOTIFICATION)

    assert (delivery.ok, delivery.status_code) == (False, 535)
    assert not starttls_server.received
    assert "wrong-pa55word" not in caplog.text + repr(notifier) + repr(delivery)


def test_untrusted_certificate_is_refused(starttls_server: Mailbox) -> None:
    notifier = EmailNotifier(
        name="mail", host="127.0.0.1", port=starttls_server.port,
        sender="q@example.com", to=("ops@example.com",),
    )  # fmt: skip

    delivery = notifier.send(NOTIFICATION)

    assert not delivery.ok
    assert delivery.error is not None
    assert "SSLCertVerificationError" in delivery.error


def test_smtp_server_down_is_a_failed_delivery() -> None:
    notifier = EmailNotifier(
        name="mail", host="127.0.0.1", port=_free_port(), security="none",
        sender="q@example.com", to=("ops@example.com",), timeout_s=2.0,
    )  # fmt: skip

    delivery = notifier.send(NOTIFICATION)

    assert (delivery.ok, delivery.attempts) == (False, 1)
    assert delivery.error is not None
    assert delivery.error.startswith("SMTP to 127.0.0.1:")
