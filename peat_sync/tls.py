"""TLS for gRPC over TCP: the `ssl.SSLContext` of the server and of its clients, and checks of
the PEM files they load, whose errors say what to fix.

Both sides negotiate HTTP/2 through ALPN, as gRPC over TLS requires, with TLS 1.2 at least.
Used by the server's configuration and by the client commands alike, so it depends on
nothing else in the package.
"""

from __future__ import annotations

import ssl
from pathlib import Path

# HTTP/2 forbids the older TLS 1.2 cipher suites (RFC 7540, section 9.2.2); these are the ones
# it allows, as grpclib's own client context picks them. TLS 1.3 suites are all allowed.
H2_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def _read_pem(text: str) -> tuple[Path, str]:
    if not text.strip():
        raise ValueError("must not be empty")
    path = Path(text)
    try:
        # PEM is ASCII; latin-1 reads any file, so a binary one fails the checks below.
        return path, path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise ValueError(
            f"cannot read it ({exc.strerror or exc}); give the path of a PEM file that the"
            " user running peat-sync may read"
        ) from None


def certificates_file(text: str) -> Path:
    """The path of a readable PEM file of one or more certificates; ValueError otherwise."""
    path, pem = _read_pem(text)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem)
    except ssl.SSLError:
        raise ValueError(
            "holds no valid certificate; give certificates in PEM form"
            " ('-----BEGIN CERTIFICATE-----' blocks)"
        ) from None
    return path


def private_key_file(text: str) -> Path:
    """The path of a readable PEM file holding a private key; ValueError otherwise. Whether
    the key is valid and fits its certificate is checked when a context loads it."""
    path, pem = _read_pem(text)
    if "PRIVATE KEY-----" not in pem:
        raise ValueError(
            "holds no private key; give the key in PEM form ('-----BEGIN PRIVATE KEY-----')"
        )
    return path


def _refuse_password() -> bytes:
    # Without a password callback, OpenSSL would prompt on the terminal for an encrypted key.
    raise ValueError(
        "the private key is encrypted; give it unencrypted, in a file only its user may read"
    )


def _load_identity(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(cert, key, password=_refuse_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"the key in {key} is not the private key of the certificate in {cert};"
                " give the pair that was issued together"
            ) from None
        raise ValueError(
            f"cannot load the certificate {cert} with the key {key} ({exc.reason or exc});"
            " check that both are whole PEM files"
        ) from None


def _require_h2(context: ssl.SSLContext, protocols: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(H2_CIPHERS)
    context.set_alpn_protocols(list(protocols))
    return context


def server_context(
    cert: Path, key: Path, client_ca: Path | None = None, *, http1: bool = False
) -> ssl.SSLContext:
    """The server's context: its certificate chain (`cert`, PEM, its own certificate first)
    and private key; with `client_ca`, mutual TLS: every client must present a certificate
    that it signed. HTTP/2 only (gRPC's), or with `http1` HTTP/1.1 too (the HTTP
    listener's). ValueError when the files do not make a usable pair."""
    protocols = ("h2", "http/1.1") if http1 else ("h2",)
    context = _require_h2(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), protocols)
    _load_identity(context, cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


def client_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client's context: it trusts `ca` (PEM), or else the system's trusted CAs, and checks
    the server's name; with `cert` and `key`, it presents that certificate (mutual TLS).
    ValueError when only one of `cert` and `key` is given, or they do not fit."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate and its key go together; give both or neither")
    context = _require_h2(ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca))
    if cert is not None and key is not None:
        _load_identity(context, cert, key)
    return context


def describe(context: ssl.SSLContext | None) -> str:
    """How a server with this context serves: "plaintext", "TLS" or "mutual TLS"."""
    if context is None:
        return "plaintext"
    return "mutual TLS" if context.verify_mode == ssl.CERT_REQUIRED else "TLS"
