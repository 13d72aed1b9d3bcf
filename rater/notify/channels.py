"""The two ways a notification leaves: email over SMTP and an HTTP webhook.

Each channel's ``send`` returns when the other side has accepted the message, or raises
:class:`DeliveryError` saying whether another try can help (``permanent``). Retries,
backoff and the dead letter are the consumer's business, not the channel's.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Callable

from .messages import Event, render_email

if TYPE_CHECKING:
    import aiohttp


class DeliveryError(Exception):
    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "rater@localhost"
    security: str = "none"  # none, starttls, ssl
    username: str | None = None
    password: str | None = None
    timeout: float = 15.0


def build_email(event: Event, recipients: tuple[str, ...], sender: str) -> EmailMessage:
    """The message; its Message-ID comes from the event id, so a mail system can drop a resend."""
    content = render_email(event)
    msg = EmailMessage()
    msg["Subject"] = content.subject
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{event.event_id}.{event.tenant_id}@rater.notify>"
    msg["X-Rater-Event-Id"] = event.event_id
    msg["X-Rater-Tenant"] = event.tenant_id
    msg.set_content(content.text)
    return msg


class EmailChannel:
    name = "email"

    def __init__(self, settings: SmtpSettings):
        self.settings = settings

    async def send(self, event: Event, recipients: tuple[str, ...], on_accepted: Callable[[], None] = lambda: None) -> None:
        """Returns once the server has accepted the message (its reply to DATA).

        ``on_accepted`` runs in the sending thread right after that reply, before the QUIT
        and before the event loop hears of it: the caller records the delivery there, so a
        crash can repeat only a message whose acceptance was still on the wire."""
        msg = build_email(event, recipients, self.settings.sender)
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[None] = loop.create_future()

        def settle(error: DeliveryError | None) -> None:
            if not accepted.done():
                accepted.set_exception(error) if error else accepted.set_result(None)

        def tell(error: DeliveryError | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the process is stopping
                loop.call_soon_threadsafe(settle, error)

        def accepted_now() -> None:
            try:
                on_accepted()
            finally:
                tell(None)

        def work() -> None:
            try:
                self._send_blocking(msg, accepted_now)
            except BaseException as exc:  # noqa: BLE001 - never leave the caller waiting
                tell(self._delivery_error(exc))

        # smtplib blocks; a thread per send keeps the event loop (and other tenants) moving.
        loop.run_in_executor(None, work)
        await accepted

    def _delivery_error(self, exc: BaseException) -> DeliveryError:
        return _smtp_delivery_error(exc, self.settings.host, self.settings.port)

    def _send_blocking(self, msg: EmailMessage, on_accepted: Callable[[], None] = lambda: None) -> None:
        client = self._hand_over(msg)
        on_accepted()  # the server has the message: the rest is politeness
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()

    def _hand_over(self, msg: EmailMessage) -> smtplib.SMTP:
        """Connect and send up to the server's reply to DATA; returns the open connection."""
        s = self.settings
        client: smtplib.SMTP | None = None
        try:
            if s.security == "ssl":
                client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            if s.security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if s.username:
                client.login(s.username, s.password or "")
            refused = client.send_message(msg)
            if refused:
                raise DeliveryError(f"SMTP refused recipients: {_refused(refused)}", permanent=False)
            return client
        except BaseException:
            if client is not None:
                client.close()
            raise


def _smtp_delivery_error(exc: BaseException, host: str, port: int) -> DeliveryError:
    """What an SMTP failure means for the next try: 5xx replies are permanent."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return DeliveryError(f"SMTP refused every recipient: {_refused(exc.recipients)}", permanent=_all_permanent(exc.recipients))
    if isinstance(exc, smtplib.SMTPResponseException):
        err = exc.smtp_error
        text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
        return DeliveryError(f"SMTP {exc.smtp_code} {text}", permanent=500 <= exc.smtp_code < 600)
    return DeliveryError(f"SMTP {host}:{port}: {exc.__class__.__name__}: {exc}")


def _refused(refused: dict) -> str:
    return ", ".join(f"{addr} ({code})" for addr, (code, _msg) in refused.items())


def _all_permanent(refused: dict) -> bool:
    return all(500 <= code < 600 for code, _msg in refused.values())


class WebhookChannel:
    """POST of the event's JSON as it came from Kafka, with ``Idempotency-Key: <event_id>``.

    2xx is delivered. 408, 429, 5xx and connection errors are tried again; any other status
    says the request itself is wrong, and the event is dead-lettered without more tries.
    """

    name = "webhook"

    def __init__(self, url: str, timeout: float = 10.0, headers: dict[str, str] | None = None):
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        # Imported here: every rater command reads this module (its options), and aiohttp
        # costs a fifth of a second to import.
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def send(self, event: Event, body: bytes, on_accepted: Callable[[], None] = lambda: None) -> None:
        """Returns on a 2xx answer, after ``on_accepted`` (called as soon as the status is read)."""
        import aiohttp

        session = await self._client()
        headers = {**self.headers, "Content-Type": "application/json", "Idempotency-Key": event.event_id}
        try:
            async with session.post(self.url, data=body, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    on_accepted()
                    return
                text = (await resp.text(errors="replace"))[:200]
                retry = resp.status in (408, 429) or resp.status >= 500
                raise DeliveryError(f"webhook HTTP {resp.status} {text}".rstrip(), permanent=not retry)
        except DeliveryError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise DeliveryError(f"webhook {self.url}: {exc.__class__.__name__}: {exc}".rstrip(": ")) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
