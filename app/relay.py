"""Relaying through the submission service with aiosmtplib.

TLS is never optional: on 587 a server that does not offer STARTTLS is left
before any credential is sent; on 465 TLS starts with the first byte.
Certificates are verified (a private CA is the SUBMISSION_CA_FILE setting).
One AUTH attempt per send, with one mechanism (PLAIN, else LOGIN). Every
failure becomes a Problem with the HTTP status that says whose move it is.
"""

import asyncio
import re
import ssl
from dataclasses import dataclass, field
from functools import lru_cache

import aiosmtplib
from pydantic import BaseModel

from app.config import Settings
from app.errors import Problem

QUEUE_ID = re.compile(r"queued as ([0-9A-Za-z]+)")
SENDER_REJECTED = "Sender address rejected"


class RefusedRecipient(BaseModel):
    address: str
    code: int
    message: str


@dataclass
class Relayed:
    response: str
    queue_id: str | None
    accepted: list[str]
    refused: list[RefusedRecipient] = field(default_factory=list)


class SubmissionProblem(Problem):
    status, code, title = 502, "submission-failed", "The submission server failed the send"


class SubmissionUnreachable(SubmissionProblem):
    code, title = "submission-unreachable", "The submission server cannot be reached"
    retryable = True


class SubmissionTLSFailed(SubmissionProblem):
    code, title = "submission-tls-failed", "No trustworthy TLS with the submission server"


class SubmissionLoginFailed(SubmissionProblem):
    code, title = "submission-login-failed", "The submission server refused the login"


class SubmissionTimeout(SubmissionProblem):
    status, code, title = 504, "submission-timeout", "The submission server did not answer in time"


class SubmissionBusy(SubmissionProblem):
    status, code, title = 503, "submission-temporary-failure", "The submission server said: later"
    retryable = True


class SenderRefused(SubmissionProblem):
    status, code, title = 403, "sender-refused", "The submission server refused the From address"


class RecipientsRefused(SubmissionProblem):
    status, code, title = 422, "recipients-refused", "The submission server refused every recipient"

    def __init__(self, detail: str, refused: list[RefusedRecipient]) -> None:
        super().__init__(detail)
        self.refused = refused


class MessageTooBig(SubmissionProblem):
    status, code, title = 413, "message-too-big", "The message is too big"


class SMTPUTF8Unsupported(SubmissionProblem):
    status, code, title = 422, "smtputf8-unsupported", "An address needs SMTPUTF8"


def _said(error: aiosmtplib.SMTPResponseException) -> str:
    return f"{error.code} {error.message}".strip()


def _temporary(error: aiosmtplib.SMTPResponseException) -> SubmissionBusy:
    return SubmissionBusy(
        f"the server answered {_said(error)}; retry later", headers={"Retry-After": "60"}
    )


@lru_cache(maxsize=8)
def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Built once per CA file: loading certificates costs more than a handshake."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def relay(
    settings: Settings,
    *,
    sender: str,
    recipients: list[str],
    data: bytes,
    username: str,
    password: str,
    caller_credentials: bool,
    smtputf8: bool,
) -> Relayed:
    implicit = settings.SUBMISSION_TLS == "implicit"
    client = aiosmtplib.SMTP(
        hostname=settings.SUBMISSION_HOST,
        port=settings.SUBMISSION_PORT,
        use_tls=implicit,
        start_tls=False,
        tls_context=tls_context(settings.SUBMISSION_CA_FILE),
        timeout=settings.SUBMISSION_TIMEOUT,
    )
    whose = "the credentials in the request" if caller_credentials else "the service's account"
    data_sent = False
    try:
        async with asyncio.timeout(settings.SUBMISSION_TIMEOUT):
            await client.connect(timeout=settings.SUBMISSION_CONNECT_TIMEOUT)
            await client.ehlo()
            if not implicit:
                if not client.supports_extension("starttls"):
                    raise SubmissionTLSFailed(
                        "the server does not offer STARTTLS; nothing was sent, no credentials"
                    )
                await client.starttls()
                await client.ehlo()  # what the server offers inside TLS (AUTH among it)
            if smtputf8 and not client.supports_extension("smtputf8"):
                raise SMTPUTF8Unsupported(
                    "an address has a UTF-8 local part and the server does not offer SMTPUTF8"
                )
            methods = [method.lower() for method in client.server_auth_methods]
            try:
                if "plain" in methods:
                    await client.auth_plain(username, password)
                elif "login" in methods:
                    await client.auth_login(username, password)
                else:
                    raise SubmissionLoginFailed("the server offers neither AUTH PLAIN nor LOGIN")
            except aiosmtplib.SMTPAuthenticationError as error:
                if 400 <= error.code < 500:
                    raise _temporary(error) from None
                login_failed = SubmissionLoginFailed(f"the server refused {whose}: {_said(error)}")
                if caller_credentials:  # the caller's to fix, not ours
                    login_failed.status = 401
                    login_failed.headers = {"WWW-Authenticate": 'Bearer realm="mailprov"'}
                raise login_failed from None

            options = ["SMTPUTF8", "BODY=8BITMIME"] if smtputf8 else []
            encoding = "utf-8" if smtputf8 else "ascii"
            try:
                await client.mail(sender, options=options, encoding=encoding)
            except aiosmtplib.SMTPSenderRefused as error:
                if 400 <= error.code < 500:
                    raise _temporary(error) from None
                if error.code == 552:
                    raise MessageTooBig(f"the server answered {_said(error)}") from None
                raise SenderRefused(
                    f"the server refused From {sender} for {whose}: {_said(error)}"
                ) from None

            accepted: list[str] = []
            refused: list[RefusedRecipient] = []
            for recipient in recipients:
                try:
                    await client.rcpt(recipient, encoding=encoding)
                    accepted.append(recipient)
                except aiosmtplib.SMTPRecipientRefused as error:
                    refused.append(
                        RefusedRecipient(address=recipient, code=error.code, message=error.message)
                    )
            # Postfix delays its sender checks to RCPT (smtpd_delay_reject=yes): a From the
            # login does not own comes back on every recipient, not on MAIL.
            if any(SENDER_REJECTED in r.message for r in refused):
                raise SenderRefused(
                    f"the server refused From {sender} for {whose}: "
                    + next(r.message for r in refused if SENDER_REJECTED in r.message)
                )
            if not accepted:
                if all(400 <= r.code < 500 for r in refused):
                    raise SubmissionBusy(
                        "every recipient was deferred; retry later", headers={"Retry-After": "60"}
                    )
                raise RecipientsRefused("the server refused every recipient", refused)

            data_sent = True
            try:
                response = await client.data(data)
            except aiosmtplib.SMTPDataError as error:
                if 400 <= error.code < 500:
                    raise _temporary(error) from None
                if error.code == 552:
                    raise MessageTooBig(f"the server answered {_said(error)}") from None
                raise SubmissionProblem(f"the server refused the message: {_said(error)}") from None
    except (TimeoutError, aiosmtplib.SMTPTimeoutError):
        if data_sent:
            raise SubmissionTimeout(
                "the server did not answer after the message was sent: the outcome is unknown "
                "(it may have been queued); check the mail log before sending again"
            ) from None
        timeout = SubmissionTimeout(
            "the submission server did not answer in time; nothing was sent"
        )
        timeout.retryable = True
        raise timeout from None
    except ssl.SSLError as error:
        raise SubmissionTLSFailed(
            f"TLS with the submission server failed: {error.reason}"
        ) from None
    except aiosmtplib.SMTPServerDisconnected:
        if data_sent:
            raise SubmissionProblem(
                "the connection was lost after the message was sent: the outcome is unknown"
            ) from None
        raise SubmissionUnreachable("the submission server closed the connection") from None
    except (aiosmtplib.SMTPConnectError, OSError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        if isinstance(error.__cause__, ssl.SSLError) or isinstance(error, ssl.SSLError):
            raise SubmissionTLSFailed("TLS with the submission server failed") from None
        raise SubmissionUnreachable(
            f"cannot reach {settings.SUBMISSION_HOST}:{settings.SUBMISSION_PORT}: {reason}"
        ) from None
    except aiosmtplib.SMTPResponseException as error:
        if 400 <= error.code < 500:
            raise _temporary(error) from None
        raise SubmissionProblem(f"the server answered {_said(error)}") from None
    finally:
        if client.is_connected:
            try:
                await asyncio.wait_for(client.quit(), timeout=5)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
    match = QUEUE_ID.search(response.message)
    return Relayed(
        response=f"{response.code} {response.message}",
        queue_id=match.group(1) if match else None,
        accepted=accepted,
        refused=refused,
    )
