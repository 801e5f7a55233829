"""The names a server's TLS certificate is for, when it is not for the name connected to.

OpenSSL's hostname-mismatch error names only the host asked for. To say which names the
certificate does hold, a second connection is opened that verifies the chain (so the names
come from a certificate our CAs trust) but not the name, reads the certificate and closes:
nothing but EHLO and STARTTLS is sent on it, never a credential or a message.
"""

from __future__ import annotations

import smtplib
import ssl

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the chain was
# trusted (OpenSSL checks it first), only the name differs.
NAME_MISMATCH_CODES = (62, 64)


def is_name_mismatch(exc: ssl.SSLCertVerificationError) -> bool:
    return exc.verify_code in NAME_MISMATCH_CODES


def certificate_names(
    host: str, port: int, implicit_tls: bool, context: ssl.SSLContext, timeout: float
) -> list[str]:
    """The DNS names and IP addresses in the certificate ``host:port`` presents (its common
    name when it has none), or [] when they cannot be read."""
    context.check_hostname = False  # the chain is still verified: CERT_REQUIRED stays
    smtp: smtplib.SMTP | None = None
    try:
        if implicit_tls:
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
            smtp.ehlo()
            smtp.starttls(context=context)
        certificate = smtp.sock.getpeercert() if isinstance(smtp.sock, ssl.SSLSocket) else None
    except (OSError, smtplib.SMTPException, ValueError):
        return []
    finally:
        if smtp is not None:
            smtp.close()
    return _names(certificate or {})


def _names(certificate: dict) -> list[str]:  # type: ignore[type-arg]
    names = [
        str(value)
        for kind, value in certificate.get("subjectAltName", ())
        if kind in ("DNS", "IP Address")
    ]
    if names:
        return names
    return [
        str(value)
        for entry in certificate.get("subject", ())
        for key, value in entry
        if key == "commonName"
    ]
