"""Transport security of `peat-sync serve`: TLS, mutual TLS, the unix socket's mode, and the
warning for a plaintext server on every interface.

The certificates are real, made once per session: a CA that signs the server's certificate
(for 127.0.0.1 and localhost) and a client certificate, and a second CA, unknown to the server,
that signs another client certificate. The official grpcio client, the project's `Client` and
the `peat-sync` commands all connect over real sockets.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from peat_sync.bench.launcher import ServerProcess
from peat_sync.client import ChangeType, Client, Unavailable
from peat_sync.tls import client_context
from tests.helpers import connect_http
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.clients import GrpcioApi, GrpcioClient, get, put, status
from tests.helpers.servers import StartServer
from tests.helpers.streams import grpcio_subscription
from tests.helpers.waiting import CALL_TIMEOUT, run_scenario

# ---------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class Pki:
    """PEM files: `ca` signs `server` and `client`; `rogue_ca`, which the server does not
    know, signs `rogue_client`. Each certificate `X` has its key in `X_key`."""

    ca: Path
    server: Path
    server_key: Path
    client: Path
    client_key: Path
    rogue_ca: Path
    rogue_client: Path
    rogue_client_key: Path
    encrypted_key: Path  # the server's key, encrypted with a password


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    extensions: list[x509.ExtensionType],
) -> x509.Certificate:
    """A certificate for `key`, signed by `issuer` (certificate and key), or self-signed."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = (
        (issuer[0].subject, issuer[1]) if issuer else (_name(common_name), key)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), False
        )
    )
    for extension in extensions:
        builder = builder.add_extension(
            extension, critical=isinstance(extension, x509.BasicConstraints)
        )
    return builder.sign(signing_key, hashes.SHA256())


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    return _certificate(common_name, key, None, [x509.BasicConstraints(True, None), usage]), key


def _leaf(
    common_name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    purpose: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    extensions: list[x509.ExtensionType] = [
        x509.BasicConstraints(False, None),
        x509.ExtendedKeyUsage([purpose]),
    ]
    if names:
        extensions.append(x509.SubjectAlternativeName(names))
    return _certificate(common_name, key, issuer, extensions), key


def _write_certificate(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(
    path: Path,
    key: ec.EllipticCurvePrivateKey,
    encryption: serialization.KeySerializationEncryption | None = None,
) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            encryption or serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _ca("peat-sync test CA")
    server = _leaf(
        "peat-sync server",
        ca,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = _leaf("fleet hub", ca, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    rogue_ca = _ca("another CA")
    rogue_client = _leaf("intruder", rogue_ca, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(
        ca=_write_certificate(directory / "ca.pem", ca[0]),
        server=_write_certificate(directory / "server.pem", server[0]),
        server_key=_write_key(directory / "server.key", server[1]),
        client=_write_certificate(directory / "client.pem", client[0]),
        client_key=_write_key(directory / "client.key", client[1]),
        rogue_ca=_write_certificate(directory / "rogue-ca.pem", rogue_ca[0]),
        rogue_client=_write_certificate(directory / "rogue-client.pem", rogue_client[0]),
        rogue_client_key=_write_key(directory / "rogue-client.key", rogue_client[1]),
        encrypted_key=_write_key(
            directory / "encrypted.key",
            server[1],
            serialization.BestAvailableEncryption(b"secret"),
        ),
    )


def tls_args(pki: Pki, *, mutual: bool = False) -> list[str]:
    args = ["--tls-cert", str(pki.server), "--tls-key", str(pki.server_key)]
    return [*args, "--tls-client-ca", str(pki.ca)] if mutual else args


@pytest.fixture
def tls_server(start_server: StartServer, pki: Pki) -> ServerProcess:
    return start_server(*tls_args(pki))


@pytest.fixture
def mtls_server(start_server: StartServer, pki: Pki) -> ServerProcess:
    return start_server(*tls_args(pki, mutual=True))


# ---------------------------------------------------------------------------------------------
# Clients


class TlsGrpcioClient(GrpcioClient):
    """The official client over TLS: it trusts `ca`, and presents `cert` if given."""

    def __init__(
        self,
        target: str,
        api: GrpcioApi,
        ca: Path,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> None:
        self.pb2, pb2_grpc = api
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca.read_bytes(),
            private_key=key.read_bytes() if key else None,
            certificate_chain=cert.read_bytes() if cert else None,
        )
        self.channel = grpc.secure_channel(target, credentials)
        self.stub = pb2_grpc.PeatSidecarStub(self.channel)


def refusal(client: GrpcioClient) -> grpc.StatusCode:
    """The status of a GetStatus that must fail (the connection is refused)."""
    try:
        client.stub.GetStatus(client.pb2.GetStatusRequest(), timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    finally:
        client.close()
    raise AssertionError("the call succeeded")


def assert_still_serves(server: ServerProcess, api: GrpcioApi, pki: Pki) -> None:
    """A refused client left the server serving, and logged no traceback."""
    mutual = "(mutual TLS, " in server.log
    cert, key = (pki.client, pki.client_key) if mutual else (None, None)
    client = TlsGrpcioClient(server.address, api, pki.ca, cert, key)
    try:
        assert status(client)["phase"] == 2
    finally:
        client.close()
    assert "Traceback" not in server.log, server.log


# ---------------------------------------------------------------------------------------------
# TLS


def test_grpcio_client_over_tls_puts_gets_and_subscribes(
    tls_server: ServerProcess, grpcio_api: GrpcioApi, pki: Pki
) -> None:
    assert "(TLS, node " in tls_server.log, tls_server.log
    client = TlsGrpcioClient(tls_server.address, grpcio_api, pki.ca)
    try:
        sequence = put(client, "fleet", "p1", '{"speed": 3}')
        assert get(client, "fleet", "p1") == ('{"speed": 3}', sequence)
        with grpcio_subscription(client, since_sequence=0) as subscription:
            event = subscription.next()
            assert (event.doc_id, event.sequence) == ("p1", sequence)
            live = put(client, "fleet", "p2", "{}")
            assert subscription.next().sequence == live
    finally:
        client.close()
    assert "without TLS" not in tls_server.log


def test_client_library_over_tls(tls_server: ServerProcess, pki: Pki) -> None:
    """`Client(ssl=client_context(ca))`: unary calls and a subscription, through localhost
    too (the certificate names both)."""

    async def scenario() -> None:
        context = client_context(pki.ca)
        async with Client(tls_server.address, ssl=context) as client:
            sequence = await client.put("fleet", "p1", {"speed": 3})
            document = await client.get("fleet", "p1")
            assert document is not None
            assert document.data == {"speed": 3}
            async with client.subscribe(["fleet"], since=0) as subscription:
                events = [await anext(subscription) for _ in range(2)]
            assert [(e.type, e.sequence) for e in events] == [
                (ChangeType.HEARTBEAT, 0),
                (ChangeType.UPSERT, sequence),
            ]
        async with Client(f"localhost:{tls_server.port}", ssl=context) as client:
            assert (await client.status()).head_sequence == sequence

    run_scenario(scenario, timeout=30)


def test_client_does_not_trust_a_server_of_another_ca(tls_server: ServerProcess, pki: Pki) -> None:
    async def scenario() -> None:
        async with Client(tls_server.address, ssl=client_context(pki.rogue_ca)) as client:
            with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await client.status()

    run_scenario(scenario, timeout=20)


def test_plaintext_clients_against_a_tls_server_fail_cleanly(
    tls_server: ServerProcess, grpcio_api: GrpcioApi, pki: Pki
) -> None:
    """A client that does not speak TLS gets UNAVAILABLE, not a hang; the server goes on."""
    plaintext = GrpcioClient(tls_server.address, grpcio_api)
    assert refusal(plaintext) == grpc.StatusCode.UNAVAILABLE

    async def scenario() -> None:
        async with Client(tls_server.address) as client:
            with pytest.raises(Unavailable):
                await client.status()

    run_scenario(scenario, timeout=20)
    assert_still_serves(tls_server, grpcio_api, pki)


def test_tls_client_is_refused_on_a_unix_socket() -> None:
    with pytest.raises(ValueError, match="TLS is for tcp:// addresses"):
        Client("unix:///run/peat.sock", ssl=ssl.create_default_context())


# ---------------------------------------------------------------------------------------------
# Mutual TLS


def test_mutual_tls_admits_a_client_with_a_certificate_of_its_ca(
    mtls_server: ServerProcess, grpcio_api: GrpcioApi, pki: Pki
) -> None:
    assert "(mutual TLS, node " in mtls_server.log, mtls_server.log
    client = TlsGrpcioClient(mtls_server.address, grpcio_api, pki.ca, pki.client, pki.client_key)
    try:
        sequence = put(client, "commands", "c1", '{"state": "sent"}')
        with grpcio_subscription(client, since_sequence=0) as subscription:
            assert subscription.next().sequence == sequence
    finally:
        client.close()

    async def scenario() -> None:
        context = client_context(pki.ca, pki.client, pki.client_key)
        async with Client(mtls_server.address, ssl=context) as library_client:
            assert await library_client.list_ids("commands") == ["c1"]

    run_scenario(scenario, timeout=20)


@pytest.mark.parametrize("presented", ["no certificate", "another CA's certificate"])
def test_mutual_tls_refuses_other_clients(
    mtls_server: ServerProcess, grpcio_api: GrpcioApi, pki: Pki, presented: str
) -> None:
    cert, key = (pki.rogue_client, pki.rogue_client_key) if "another" in presented else (None, None)
    client = TlsGrpcioClient(mtls_server.address, grpcio_api, pki.ca, cert, key)
    assert refusal(client) == grpc.StatusCode.UNAVAILABLE

    async def scenario() -> None:
        context = client_context(pki.ca, cert, key)
        async with Client(mtls_server.address, ssl=context) as library_client:
            with pytest.raises(Unavailable):
                await library_client.status()

    run_scenario(scenario, timeout=20)
    assert_still_serves(mtls_server, grpcio_api, pki)


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_status_over_tls(tls_server: ServerProcess, pki: Pki) -> None:
    """--tls-ca, or PEAT_SIDECAR_TLS_CA (the flag wins); a server certificate of another CA is
    not trusted."""
    addr = ["--addr", tls_server.address]
    result = run_cli("status", *addr, "--tls-ca", str(pki.ca))
    assert result.returncode == 0, result.stderr
    assert '"phase": "ready"' in result.stdout

    result = run_cli("status", *addr, PEAT_SIDECAR_TLS_CA=str(pki.ca))
    assert result.returncode == 0, result.stderr
    result = run_cli("status", *addr, "--tls-ca", str(pki.ca), PEAT_SIDECAR_TLS_CA="/nowhere")
    assert result.returncode == 0, result.stderr

    result = run_cli("status", *addr, "--tls-ca", str(pki.rogue_ca))
    assert result.returncode == 3
    assert_one_line_error(result, tls_server.address, "certificate verify failed")


def test_cli_over_mutual_tls(mtls_server: ServerProcess, pki: Pki) -> None:
    addr = ["--addr", mtls_server.address, "--tls-ca", str(pki.ca)]
    identity = ["--tls-cert", str(pki.client), "--tls-key", str(pki.client_key)]
    result = run_cli("put", *addr, *identity, "c", "d", "{}")
    assert result.returncode == 0, result.stderr
    result = run_cli(
        "get",
        *addr,
        "c",
        "d",
        PEAT_SIDECAR_TLS_CLIENT_CERT=str(pki.client),
        PEAT_SIDECAR_TLS_CLIENT_KEY=str(pki.client_key),
    )
    assert (result.returncode, result.stdout) == (0, "{}\n"), result.stderr

    result = run_cli("get", *addr, "c", "d")
    assert result.returncode == 3
    assert_one_line_error(result, mtls_server.address)


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["--tls-cert", "{client}"], {}, ["--tls-cert/--tls-key", "go together"]),
        (["--tls-key", "{missing}"], {}, ["--tls-key='{missing}'", "cannot read it"]),
        ([], {"PEAT_SIDECAR_TLS_CA": "{client_key}"}, ["PEAT_SIDECAR_TLS_CA=", "no valid cert"]),
        (
            ["--tls-cert", "{client}", "--tls-key", "{rogue_client_key}"],
            {},
            ["is not the private key of the certificate"],
        ),
        (["--addr", "unix:///tmp/peat.sock", "--tls-ca", "{ca}"], {}, ["TLS is for tcp://"]),
    ],
    ids=["cert-without-key", "unreadable-key", "env-not-a-certificate", "mismatch", "unix"],
)
def test_cli_bad_tls_options_exit_2_with_one_line(
    pki: Pki, args: list[str], env: dict[str, str], fragments: list[str], tmp_path: Path
) -> None:
    paths = {**vars(pki), "missing": tmp_path / "missing.pem"}
    result = run_cli(
        "status",
        *[arg.format(**paths) for arg in args],
        **{name: value.format(**paths) for name, value in env.items()},
    )
    assert result.returncode == 2
    line = assert_one_line_error(result, *[fragment.format(**paths) for fragment in fragments])
    assert line.startswith("peat-sync status: error: ")


# ---------------------------------------------------------------------------------------------
# Start-up errors of serve

# Each case: its serve arguments and environment, with {field} for a file of `Pki` or for
# {missing} (no such file) and {directory} (not a file), and what the one line must say.
BAD_SERVE_OPTIONS: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
    "cert-without-key": (
        ["--tls-cert", "{server}"],
        {},
        ["--tls-cert is set without --tls-key", "give both"],
    ),
    "key-without-cert": (
        ["--tls-key", "{server_key}"],
        {},
        ["--tls-key is set without --tls-cert"],
    ),
    "client-ca-alone": (
        ["--tls-client-ca", "{ca}"],
        {},
        ["--tls-client-ca needs --tls-cert and --tls-key"],
    ),
    "missing-cert": (
        ["--tls-cert", "{missing}", "--tls-key", "{server_key}"],
        {},
        ["--tls-cert='{missing}'", "cannot read it (No such file or directory)", "PEM file"],
    ),
    "key-is-a-directory": (
        ["--tls-cert", "{server}", "--tls-key", "{directory}"],
        {},
        ["--tls-key='{directory}'", "cannot read it (Is a directory)"],
    ),
    "cert-is-a-key": (
        ["--tls-cert", "{server_key}", "--tls-key", "{server_key}"],
        {},
        ["--tls-cert='{server_key}'", "holds no valid certificate", "PEM"],
    ),
    "key-is-a-cert": (
        ["--tls-cert", "{server}", "--tls-key", "{server}"],
        {},
        ["--tls-key='{server}'", "holds no private key"],
    ),
    "client-ca-not-a-certificate": (
        [
            *["--tls-cert", "{server}", "--tls-key", "{server_key}"],
            "--tls-client-ca",
            "{client_key}",
        ],
        {},
        ["--tls-client-ca='{client_key}'", "holds no valid certificate"],
    ),
    "key-of-another-certificate": (
        ["--tls-cert", "{server}", "--tls-key", "{client_key}"],
        {},
        ["--tls-cert/--tls-key", "is not the private key of the certificate"],
    ),
    "encrypted-key": (
        ["--tls-cert", "{server}", "--tls-key", "{encrypted_key}"],
        {},
        ["--tls-cert/--tls-key", "the private key is encrypted", "give it unencrypted"],
    ),
    "tls-on-a-unix-socket": (
        [
            "--listen",
            "unix:///tmp/peat-tls.sock",
            "--tls-cert",
            "{server}",
            "--tls-key",
            "{server_key}",
        ],
        {},
        ["TLS is not served on a unix socket", "0600", "tcp://HOST:PORT"],
    ),
    "env-variable": (
        ["--tls-key", "{server_key}"],
        {"PEAT_SIDECAR_TLS_CERT": "{missing}"},
        ["PEAT_SIDECAR_TLS_CERT='{missing}'", "cannot read it"],
    ),
}


@pytest.mark.parametrize("case", BAD_SERVE_OPTIONS)
def test_bad_tls_configuration_exits_2_with_one_line(pki: Pki, tmp_path: Path, case: str) -> None:
    args, env, fragments = BAD_SERVE_OPTIONS[case]
    paths: dict[str, Any] = {
        **vars(pki),
        "missing": tmp_path / "missing.pem",
        "directory": tmp_path,
    }

    result = run_cli(
        "serve",
        *("--data-dir", str(tmp_path / "data")),
        *[arg.format(**paths) for arg in args],
        **{name: value.format(**paths) for name, value in env.items()},
    )

    assert result.returncode == 2
    line = assert_one_line_error(result, *[fragment.format(**paths) for fragment in fragments])
    assert line.startswith("peat-sync serve: error: ")
    assert not (tmp_path / "data").exists(), "nothing is created for a bad configuration"


# ---------------------------------------------------------------------------------------------
# The unix socket and the interfaces


def test_unix_socket_is_for_its_owner_only(
    start_unix_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """Mode 0600 whatever the umask the server starts with: here the most permissive."""
    permissive = os.umask(0)  # inherited by the server process
    try:
        server = start_unix_server()
    finally:
        os.umask(permissive)
    mode = os.stat(server.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600, oct(mode)
    client = GrpcioClient(server.address, grpcio_api)
    try:
        assert status(client)["phase"] == 2
    finally:
        client.close()


def test_the_http_listener_serves_tls_with_the_same_certificate(
    tls_server: ServerProcess, pki: Pki
) -> None:
    assert tls_server.http_url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=pki.ca)
    reply = connect_http.call(tls_server.http_url, "GetStatus", tls=trusting)
    assert reply.status == 200
    assert reply.body["phase"] == "NODE_PHASE_READY"
    # Not in plaintext, and not to a client that does not trust its CA.
    plaintext = tls_server.http_url.replace("https://", "http://")
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        connect_http.call(plaintext, "GetStatus")
    with pytest.raises(ssl.SSLCertVerificationError):
        connect_http.call(tls_server.http_url, "GetStatus", tls=ssl.create_default_context())


EVERY_INTERFACE_WARNING = "listening on every interface (tcp://0.0.0.0:"


def test_plaintext_on_every_interface_is_warned_about(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    server = start_server("--http-listen", "tcp://0.0.0.0:0", listen="tcp://0.0.0.0:0")
    warnings = [line for line in server.log.splitlines() if EVERY_INTERFACE_WARNING in line]
    assert len(warnings) == 2, server.log  # one for each port
    assert " WARNING " in warnings[0]
    for advice in ("without TLS", "--tls-cert/--tls-key", "loopback"):
        assert advice in warnings[0], warnings[0]
    assert "(plaintext, node " in server.log
    client = GrpcioClient(server.address, grpcio_api)
    try:
        assert status(client)["phase"] == 2
    finally:
        client.close()


def test_tls_on_every_interface_and_plaintext_on_loopback_are_not_warned_about(
    start_server: StartServer, pki: Pki
) -> None:
    with_tls = start_server(*tls_args(pki), listen="tcp://0.0.0.0:0")
    loopback = start_server(data_dir=with_tls.data_dir.with_name("loopback"))
    for server in (with_tls, loopback):
        assert "listening on every interface" not in server.log, server.log
        assert " WARNING " not in server.log, server.log
