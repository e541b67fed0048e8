"""Who may call the server (R33): loopback by default, a bearer token for anything else."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
import trio
from test_server_support import make_runtime, perdure_cli, served

import perdure
from perdure.server import serve
from perdure.server._auth import check_bind, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_bind_needs_a_token() -> None:
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "secret")
    with pytest.raises(perdure.InvalidInput, match="without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(perdure.InvalidInput, match="empty"):
        check_bind("127.0.0.1", "")


async def test_serve_refuses_before_opening_anything(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    with pytest.raises(perdure.InvalidInput):
        await serve(rt, host="0.0.0.0", port=0)
    assert not data_dir.exists()  # the runtime was never opened


def test_the_command_line_refuses_too(tmp_path: Path) -> None:
    out = perdure_cli("serve", "nowhere:rt", "--host", "0.0.0.0", cwd=tmp_path)
    assert out.returncode == 2
    assert "error: INVALID_INPUT: refusing to listen on '0.0.0.0' without a token" in out.stderr
    assert "hint:" in out.stderr


async def test_tokens_are_required_and_compared_in_constant_time(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    rt = make_runtime(data_dir)
    async with served(rt, token="s3cret") as s:
        ok = await s.client.post(
            "/runs", json={"target": "workflow:echo", "input": {}, "owner": "project:p1"}
        )
        assert ok.status_code == 202
        anonymous = s.client.build_request("GET", "/runs")
        anonymous.headers.pop("Authorization")
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "s3cret"},
            {"Authorization": "Bearer s3cre"},
            {"Authorization": "Basic s3cret"},
        ):
            request = s.client.build_request("GET", "/runs")
            request.headers.pop("Authorization")
            request.headers.update(headers)
            r = await s.client.send(request)
            assert r.status_code == 401, headers
            assert r.json()["code"] == "UNAUTHORIZED"
            assert r.headers["www-authenticate"] == "Bearer"
        # SSE and AG-UI routes too.
        request = s.client.build_request("POST", "/agents/assistant", json={})
        request.headers.pop("Authorization")
        assert (await s.client.send(request)).status_code == 401
        # Health stays open (a load balancer's probe carries no token).
        request = s.client.build_request("GET", "/health")
        request.headers.pop("Authorization")
        assert (await s.client.send(request)).status_code == 200
        assert (b"wrong", b"s3cret") in compared
        request = s.client.build_request("GET", "/runs", headers={"Authorization": "bearer s3cret"})
        assert (await s.client.send(request)).status_code == 200  # the scheme is case-insensitive
        assert len(rt.list().runs) == 1


async def test_a_token_on_loopback_is_enforced_too(data_dir: Path) -> None:
    rt = make_runtime(data_dir)
    async with served(rt, token="t") as s:
        request = s.client.build_request("GET", "/runs")
        request.headers.pop("Authorization")
        assert (await s.client.send(request)).status_code == 401
        assert (await s.client.get("/runs")).status_code == 200
    _ = trio
