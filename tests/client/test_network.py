"""The client's network settings: proxies, TLS trust and failures, a rotated token.

Real sockets: the built-in server (tests/kbserver.py), small servers of this file (a TLS
server with certificates from ``trustme``, a fake proxy that answers everything itself).
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from kbfs.client import (
    AuthenticationError,
    Container,
    Credentials,
    KanboardClient,
    TransportError,
)
from kbfs.client.endpoint import cleartext_warnings, ssl_context

try:
    from kbserver import KanboardServer
except ImportError:  # pragma: no cover
    from tests.kbserver import KanboardServer


class _Answer(BaseHTTPRequestHandler):
    """Answers every request with a JSON-RPC result of its own, and records what it got."""

    protocol_version = "HTTP/1.1"
    server: _Recording

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.requestline, dict(self.headers), body))
        rid = json.loads(body).get("id") if body.startswith(b"{") else None
        out = json.dumps({"jsonrpc": "2.0", "result": self.server.result, "id": rid}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_CONNECT(self) -> None:
        """A tunnel request (https through a proxy): recorded and refused."""
        self.server.seen.append((self.requestline, dict(self.headers), b""))
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Recording(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, dict[str, str], bytes]]
    result: Any = "from-the-small-server"


@pytest.fixture
def small_server() -> Iterator[_Recording]:
    srv = _Recording(("127.0.0.1", 0), _Answer)
    srv.seen = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(cert: trustme.LeafCert) -> _Recording:
    srv = _Recording(("127.0.0.1", 0), _Answer)
    srv.seen = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def tls(ca: trustme.CA) -> Iterator[_Recording]:
    srv = tls_server(ca.issue_cert("127.0.0.1", "localhost"))
    yield srv
    srv.shutdown()
    srv.server_close()


def url_of(srv: _Recording, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{srv.server_address[1]}/jsonrpc.php"


# ------------------------------------------------------------------------------ proxies


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
async def test_proxy_variables_of_the_environment_are_ignored(
    kb: KanboardServer, small_server: _Recording, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """A proxy in the environment would get the token (in clear for http): not used."""
    monkeypatch.setenv(variable, f"http://127.0.0.1:{small_server.server_address[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with KanboardClient(kb.url, Credentials(kb.token), timeout=10) as client:
        assert await client.get_version() != "from-the-small-server"
    assert small_server.seen == []


async def test_a_proxy_given_on_purpose_is_used(kb: KanboardServer, small_server: _Recording):  # type: ignore[no-untyped-def]
    proxy = f"http://127.0.0.1:{small_server.server_address[1]}"
    async with KanboardClient(kb.url, Credentials(kb.token), timeout=10, proxy=proxy) as client:
        assert await client.get_version() == "from-the-small-server"
    (requestline, _, _) = small_server.seen[0]
    assert requestline.startswith(f"POST {kb.url} ")  # the absolute form a proxy gets


async def test_https_through_a_proxy_is_tunnelled(small_server: _Recording) -> None:
    """The proxy is asked for a tunnel (CONNECT) and never gets the token."""
    proxy = f"http://127.0.0.1:{small_server.server_address[1]}"
    url = "https://kb.example.org/jsonrpc.php"
    async with KanboardClient(url, Credentials("secret-token"), timeout=10, proxy=proxy) as c:
        with pytest.raises(TransportError):
            await c.get_version()
    assert small_server.seen
    for requestline, headers, _ in small_server.seen:
        assert requestline.startswith("CONNECT kb.example.org:443 ")
        assert not any(k.lower() == "authorization" for k in headers)


def test_cleartext_warnings_cover_the_proxy() -> None:
    assert cleartext_warnings("http://127.0.0.1:8080/jsonrpc.php") == []
    assert "kb.example.com is plain http" in cleartext_warnings("http://kb.example.com/x")[0]
    via_proxy = cleartext_warnings("http://127.0.0.1/jsonrpc.php", "http://10.1.2.3:3128")
    assert len(via_proxy) == 1 and "proxy 10.1.2.3" in via_proxy[0]
    # https through a proxy is tunnelled (CONNECT): the proxy never sees the token.
    assert cleartext_warnings("https://kb.example.com/x", "http://10.1.2.3:3128") == []
    assert cleartext_warnings("http://127.0.0.1/x", "https://10.1.2.3:3128") == []
    assert cleartext_warnings("http://127.0.0.1/x", "http://127.0.0.1:3128") == []


# ------------------------------------------------------------------------------ TLS


def test_the_system_ca_store_is_the_default() -> None:
    """Not certifi's bundle (httpx's default): the CAs this machine's OpenSSL trusts."""
    context = ssl_context(True)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats() == ssl.create_default_context().cert_store_stats()


async def test_ssl_cert_file_is_honoured(
    tls: _Recording, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment is not trusted for proxies, but SSL_CERT_FILE (OpenSSL's own
    variable for the system store) still names the CAs."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    async with KanboardClient(
        url_of(tls, "https"), Credentials("secret-token"), timeout=10
    ) as client:
        assert await client.get_version() == "from-the-small-server"


async def test_an_unknown_ca_says_what_to_do(tls: _Recording) -> None:
    async with KanboardClient(
        url_of(tls, "https"), Credentials("secret-token"), timeout=10
    ) as client:
        with pytest.raises(TransportError) as caught:
            await client.get_version()
    message = str(caught.value)
    assert "certificate verify failed" in message and "-o cafile=FILE" in message


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (no CA), as many servers have."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kanboard.local")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "self-signed.pem", tmp_path / "self-signed.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_a_self_signed_certificate_says_to_give_it_as_cafile(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    srv = _Recording(("127.0.0.1", 0), _Answer)
    srv.seen = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        async with KanboardClient(url_of(srv, "https"), Credentials("secret-token")) as client:
            with pytest.raises(TransportError) as caught:
                await client.get_version()
        assert str(caught.value) == (
            "getVersion: certificate verify failed: self-signed certificate;"
            " give the CA with -o cafile=FILE"
        )
        async with KanboardClient(
            url_of(srv, "https"), Credentials("secret-token"), verify=str(cert_file)
        ) as client:
            assert await client.get_version() == "from-the-small-server"
    finally:
        srv.shutdown()
        srv.server_close()


async def test_cafile_is_trusted(tls: _Recording, ca: trustme.CA, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    async with KanboardClient(
        url_of(tls, "https"), Credentials("secret-token"), timeout=10, verify=str(bundle)
    ) as client:
        assert await client.get_version() == "from-the-small-server"


async def test_a_certificate_for_another_host_says_so(ca: trustme.CA, tmp_path: Path) -> None:
    srv = tls_server(ca.issue_cert("kb.example.org"))
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    try:
        async with KanboardClient(
            url_of(srv, "https"), Credentials("secret-token"), timeout=10, verify=str(bundle)
        ) as client:
            with pytest.raises(TransportError) as caught:
                await client.get_version()
    finally:
        srv.shutdown()
        srv.server_close()
    message = str(caught.value)
    assert "mismatch" in message and "host name the certificate was issued for" in message


async def test_https_to_a_plain_http_port_says_so(small_server: _Recording) -> None:
    async with KanboardClient(
        url_of(small_server, "https"), Credentials("secret-token"), timeout=10
    ) as c:
        with pytest.raises(TransportError) as caught:
            await c.get_version()
    assert "does not speak TLS" in str(caught.value)


@pytest.mark.parametrize(
    "content", [None, b"", b"not a certificate\n"], ids=["missing", "empty", "junk"]
)
def test_a_bad_cafile_is_one_line(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=f"^cafile {path}: "):
        ssl_context(str(path))


# ------------------------------------------------------------------------------ a rotated token


def _token_file(path: Path, token: str) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


async def test_a_401_rereads_the_token_once_and_retries(kb: KanboardServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    token_file = _token_file(tmp_path / "token", kb.token)
    source = lambda: token_file.read_text().strip()  # noqa: E731
    pid = kb.project("p")
    tid = kb.task(pid, "t")
    async with KanboardClient(
        kb.url, Credentials(kb.token), timeout=10, secret_source=source
    ) as client:
        await client.get_version()
        new = kb.rotate_token()
        _token_file(token_file, new)
        before = client.statistics().http_requests
        await client.get_version()
        assert client.statistics().http_requests - before == 2  # refused, then the retry
        # An upload's body is sent again from the start of its source.
        kb.rotate_token()
        _token_file(token_file, kb.token)
        data = b"uploaded after a rotation\n" * 10_000  # past what a refused request gets read
        fid = await client.create_file(Container(pid, tid), "r.txt", io.BytesIO(data), len(data))
        assert kb.download_task_file(fid) == data
        # A download likewise.
        kb.rotate_token()
        _token_file(token_file, kb.token)
        sink = io.BytesIO()
        await client.download_file(Container(pid, tid), fid, sink)
        assert sink.getvalue() == data
        # Unchanged file: the 401 stands, after one request.
        kb.rotate_token()
        before = client.statistics().http_requests
        with pytest.raises(AuthenticationError):
            await client.get_version()
        assert client.statistics().http_requests - before == 1


async def test_reload_secret_picks_up_a_new_token(kb: KanboardServer, tmp_path: Path) -> None:
    token_file = _token_file(tmp_path / "token", kb.token)
    async with KanboardClient(
        kb.url,
        Credentials(kb.token),
        timeout=10,
        secret_source=lambda: token_file.read_text().strip(),
    ) as client:
        assert client.reload_secret() is False
        _token_file(token_file, kb.rotate_token())
        assert client.reload_secret() is True
        before = client.statistics().http_requests
        await client.get_version()
        assert client.statistics().http_requests - before == 1  # no refusal first
