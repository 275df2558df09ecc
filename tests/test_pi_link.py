"""The user-space link emulator: parsing, delay and bandwidth on a plain TCP echo."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from deepreshape.errors import UsageError
from deepreshape.pi.link import Relay
from deepreshape.pi.linkprofile import PRESETS, LinkProfile


@pytest.mark.parametrize("text,rate,rtt", [
    ("lan", 3e9, 0.3e-3), ("WAN", 400e6, 40e-3), ("100mbit:10ms", 1e8, 0.01),
    ("1.5gbit:0.5ms", 1.5e9, 5e-4), ("800kbit:1s", 8e5, 1.0), ("inf:250us", None, 2.5e-4)])
def test_parse_link_profiles(text, rate, rtt):
    got = LinkProfile.parse(text)
    assert got.rate_bps == pytest.approx(rate) if rate else got.rate_bps is None
    assert got.rtt_s == pytest.approx(rtt)
    assert "RTT" in got.describe() and got.to_dict()["rtt_s"] == got.rtt_s


@pytest.mark.parametrize("bad", ["", "fast", "100mbit", "10ms", "0mbit:1ms", "100mb:1ms",
                                 "-1gbit:1ms"])
def test_bad_link_profiles_are_usage_errors(bad):
    with pytest.raises(UsageError, match="link"):
        LinkProfile.parse(bad)


def test_presets_are_the_cheetah_papers():
    assert PRESETS["lan"].describe() == "3 Gbit/s, 0.3 ms RTT"
    assert PRESETS["wan"].describe() == "400 Mbit/s, 40 ms RTT"


def _echo_server() -> tuple[socket.socket, str]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1 << 16):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return srv, f"127.0.0.1:{srv.getsockname()[1]}"


def _round_trip(addr: str, payload: bytes) -> float:
    host, port = addr.split(":")
    with socket.create_connection((host, int(port))) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        s.sendall(payload)
        got = 0
        while got < len(payload):
            chunk = s.recv(1 << 16)
            assert chunk, "relay closed early"
            got += len(chunk)
        return time.perf_counter() - t0


def test_relay_adds_the_round_trip_time_and_keeps_the_bytes():
    srv, addr = _echo_server()
    with srv, Relay([addr, addr], LinkProfile(None, 0.08)) as fronts:
        assert _round_trip(addr, b"x") < 0.05
        times = [_round_trip(fronts[0], b"ping") for _ in range(3)]
        assert all(0.08 <= t < 0.3 for t in times)


def test_relay_limits_bandwidth_in_each_direction():
    srv, addr = _echo_server()
    payload = bytes(250_000)  # 2 Mbit each way at 20 Mbit/s: 0.1 s each way, pipelined
    with srv, Relay([addr, addr], LinkProfile(20e6, 0.0)) as fronts:
        t = _round_trip(fronts[1], payload)
    assert 0.1 <= t < 0.6


def test_relay_needs_two_parties_with_host_and_port():
    with pytest.raises(UsageError, match="two parties"):
        Relay(["127.0.0.1:1"], PRESETS["lan"])
    with pytest.raises(UsageError, match="HOST:PORT"):
        Relay(["127.0.0.1:1", "nohost"], PRESETS["lan"])
