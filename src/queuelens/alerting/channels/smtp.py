"""Email over SMTP (STARTTLS, implicit TLS or plain), as plain text with an HTML alternative.

EmailNotifier(name="ops-mail", host="smtp.example.com", sender="queuelens@example.com",
              to=("ops@example.com",), username="queuelens", password=Secret("…"))
"""

from __future__ import annotations

import html
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import ClassVar, Literal

from pydantic import ConfigDict

from queuelens.alerting.channels._text import alert_lines, facts
from queuelens.alerting.notify import AttemptOutcome, Delivery, Notification, Secret, deliver

#: the port each ``security`` mode uses when ``port`` is not set
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


@dataclass(frozen=True)
class EmailNotifier:
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    name: str
    host: str
    #: the From address (``from`` in queuelens.toml)
    sender: str
    to: tuple[str, ...]
    port: int | None = None
    #: ``starttls`` upgrades a plain connection; ``ssl`` is TLS from the start (port 465)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: Secret | None = None
    timeout_s: float = 10.0
    #: a CA bundle to trust instead of the system's (a private relay's certificate)
    ca_file: str | None = None

    def send(self, notification: Notification) -> Delivery:
        return deliver(self.name, [self.password], lambda: self._send(notification))

    def _send(self, notification: Notification) -> AttemptOutcome:
        message = email_message(notification, self.sender, self.to)
        port = self.port or DEFAULT_PORTS[self.security]
        try:
            smtp: smtplib.SMTP
            if self.security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    self.host, port, timeout=self.timeout_s, context=self._tls_context()
                )
            else:
                smtp = smtplib.SMTP(self.host, port, timeout=self.timeout_s)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=self._tls_context())
                if self.username is not None:
                    smtp.login(self.username, self.password.reveal() if self.password else "")
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            raw = exc.smtp_error
            reply = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            return False, exc.smtp_code, f"SMTP {exc.smtp_code}: {reply}", 1
        except (smtplib.SMTPException, OSError) as exc:
            return False, None, f"SMTP to {self.host}:{port} failed: {type(exc).__name__}: {exc}", 1
        return True, None, None, 1

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


def email_message(notification: Notification, sender: str, to: tuple[str, ...]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"{notification.title}: {notification.summary}"
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    rows = facts(notification)
    lines = alert_lines(notification)
    text = [notification.summary, ""]
    if notification.description:
        text += [notification.description, ""]
    text += [f"{title}: {value}" for title, value in rows]
    if lines:
        text += ["", "Alerts:", *(f"- {line}" for line in lines)]
    if notification.dashboard_url:
        text += ["", f"Dashboard: {notification.dashboard_url}"]
    text += ["", f"Fingerprint: {notification.fingerprint}"]
    message.set_content("\n".join(text) + "\n")

    e = html.escape
    parts = [
        f"<h2>{e(notification.title)}</h2>",
        f"<p><strong>{e(notification.summary)}</strong></p>",
    ]
    if notification.description:
        parts.append(f"<p>{e(notification.description)}</p>")
    parts.append(
        "<table>"
        + "".join(f"<tr><th align='left'>{e(t)}</th><td>{e(v)}</td></tr>" for t, v in rows)
        + "</table>"
    )
    if lines:
        parts.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in lines) + "</ul>")
    if notification.dashboard_url:
        parts.append(f"<p><a href='{e(notification.dashboard_url)}'>Open dashboard</a></p>")
    parts.append(f"<p><small>fingerprint {e(notification.fingerprint)}</small></p>")
    message.add_alternative("<html><body>" + "".join(parts) + "</body></html>", subtype="html")
    return message
