"""The /send request, and the message it becomes (standard library ``email``).

Bcc recipients go only into the envelope. Internationalised domains are sent
in A-label form; a UTF-8 local part needs SMTPUTF8 at the server. Extra
headers are limited to safe names and values: nothing that could inject a
header, reroute the message or forge what mailprov itself sets.
"""

import base64
import binascii
import re
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from app.addresses import domain_of, normalize_mail_address
from app.models import RAW_MAX, example

# Headers mailprov sets itself, or that only servers may add.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "Sender",
        "Return-Path",
        "Received",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "Content-ID",
        "DKIM-Signature",
        "ARC-Seal",
        "ARC-Message-Signature",
        "ARC-Authentication-Results",
        "Authentication-Results",
        "Delivered-To",
        "X-Original-To",
        "Resent-From",
        "Resent-To",
        "Resent-Cc",
        "Resent-Bcc",
        "Resent-Date",
        "Resent-Message-ID",
        "Resent-Sender",
    )
)
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,75}")
MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
CONTENT_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,200}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain CR, LF, NUL or other control characters")
    return value


def _text_no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL")
    return value


class Mailbox(BaseModel):
    """An address with an optional display name."""

    model_config = ConfigDict(extra="forbid")

    address: Annotated[str, Field(max_length=RAW_MAX), AfterValidator(normalize_mail_address)]
    name: Annotated[str, Field(max_length=200), AfterValidator(_no_control)] | None = None


def _mailbox(value: object) -> object:
    # "john@example.org" is short for {"address": "john@example.org"}.
    return {"address": value} if isinstance(value, str) else value


MailboxIn = Annotated[Mailbox, BeforeValidator(_mailbox)]


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_control)]
    content_type: Annotated[str, Field(max_length=255)] = "application/octet-stream"
    content: str = Field(description="The file, base64-encoded.")
    content_id: str | None = Field(
        default=None,
        description="For an inline part referenced from the HTML as cid:<content_id>.",
    )

    @field_validator("content_type")
    @classmethod
    def _mime_type(cls, value: str) -> str:
        value = value.lower()
        if not MIME_TYPE.fullmatch(value):
            raise ValueError("must be a MIME type such as application/pdf")
        return value

    @field_validator("content")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64") from None
        return value

    @field_validator("content_id")
    @classmethod
    def _content_id(cls, value: str | None) -> str | None:
        if value is not None and not CONTENT_ID.fullmatch(value):
            raise ValueError("must be a plain content id such as logo@example.org")
        return value

    def data(self) -> bytes:
        return base64.b64decode(self.content)


class Credentials(BaseModel):
    """A mailbox's own login for the submission server."""

    model_config = ConfigDict(extra="forbid")

    username: Annotated[str, Field(min_length=1, max_length=RAW_MAX), AfterValidator(_no_control)]
    password: SecretStr = Field(description="Never stored, logged or returned.")


class SendRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        **example(
            {"from": {"address": "john@example.org", "name": "John Doe"},
             "to": ["lisa@example.net"], "subject": "Hello", "text": "Hi Lisa!",
             "credentials": {"username": "john@example.org", "password": "summersun"}},
            {"from": "noreply@example.org", "to": [{"address": "lisa@example.net", "name": "Lisa"}],
             "bcc": ["archive@example.org"], "subject": "Your invoice",
             "html": "<p>Attached.</p>",
             "attachments": [{"filename": "invoice.txt", "content_type": "text/plain",
                              "content": "SW52b2ljZSAjMQ=="}]},
        ),
    )  # fmt: skip

    sender: MailboxIn = Field(alias="from", description="The From: address and name.")
    to: list[MailboxIn] = Field(default_factory=list, max_length=10000)
    cc: list[MailboxIn] = Field(default_factory=list, max_length=10000)
    bcc: list[MailboxIn] = Field(
        default_factory=list, max_length=10000, description="Only in the envelope."
    )
    reply_to: list[MailboxIn] = Field(default_factory=list, max_length=50)
    subject: Annotated[str, Field(max_length=2000), AfterValidator(_no_control)] = ""
    text: Annotated[str, AfterValidator(_text_no_nul)] | None = None
    html: Annotated[str, AfterValidator(_text_no_nul)] | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    headers: dict[str, Annotated[str, Field(max_length=998)]] = Field(
        default_factory=dict, max_length=50, description="Extra headers with safe names."
    )
    credentials: Credentials | None = Field(
        default=None,
        description="Log in as this mailbox; without it, the service's own account is used.",
    )

    @field_validator("headers")
    @classmethod
    def _safe_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not allowed: use letters, digits, -")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name} is set by mailprov or the mail server")
            _no_control(value)
        return headers

    @model_validator(mode="after")
    def _content(self) -> Self:
        if not (self.to or self.cc or self.bcc):
            raise ValueError("give at least one recipient in to, cc or bcc")
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both")
        if any(a.content_id for a in self.attachments) and self.html is None:
            raise ValueError("inline attachments (content_id) need an html body")
        return self

    def recipients(self) -> list[str]:
        """Everyone in the envelope, each once (compared without case)."""
        seen: dict[str, str] = {}
        for mailbox in [*self.to, *self.cc, *self.bcc]:
            seen.setdefault(mailbox.address.lower(), mailbox.address)
        return list(seen.values())


class Composed(BaseModel):
    message_id: str
    data: bytes
    smtputf8: bool


def _needs_smtputf8(addresses: list[str]) -> bool:
    return any(not address.isascii() for address in addresses)


def _address(mailbox: Mailbox) -> Address:
    local, _, domain = mailbox.address.rpartition("@")
    return Address(display_name=mailbox.name or "", username=local, domain=domain)


def compose(request: SendRequest) -> Composed:
    smtputf8 = _needs_smtputf8(
        [
            m.address
            for m in (request.sender, *request.to, *request.cc, *request.bcc, *request.reply_to)
        ]
    )
    # 7-bit bodies (quoted-printable/base64) go through any server; SMTPUTF8 only
    # when an address needs it.
    mail_policy = (policy.SMTPUTF8 if smtputf8 else policy.SMTP).clone(cte_type="7bit")
    message = EmailMessage(policy=mail_policy)
    message_id = make_msgid(domain=domain_of(request.sender.address))
    message["From"] = _address(request.sender)
    if request.to:
        message["To"] = [_address(m) for m in request.to]
    if request.cc:
        message["Cc"] = [_address(m) for m in request.cc]
    if request.reply_to:
        message["Reply-To"] = [_address(m) for m in request.reply_to]
    message["Subject"] = request.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    for name, value in request.headers.items():
        message[name] = value

    if request.text is not None:
        message.set_content(request.text)
        if request.html is not None:
            message.add_alternative(request.html, subtype="html")
    else:
        assert request.html is not None
        message.set_content(request.html, subtype="html")
    html_part = _html_part(message)
    for attachment in request.attachments:
        maintype, subtype = attachment.content_type.split("/", 1)
        if attachment.content_id is not None and html_part is not None:
            html_part.add_related(
                attachment.data(),
                maintype,
                subtype,
                cid=f"<{attachment.content_id}>",
                filename=attachment.filename,
                disposition="inline",
            )
        else:
            message.add_attachment(
                attachment.data(), maintype, subtype, filename=attachment.filename
            )
    return Composed(message_id=message_id, data=message.as_bytes(), smtputf8=smtputf8)


def _html_part(message: EmailMessage) -> EmailMessage | None:
    for part in message.walk():
        if isinstance(part, EmailMessage) and part.get_content_type() == "text/html":
            return part
    return None
