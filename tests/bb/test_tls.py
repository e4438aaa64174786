"""https:// backends: verification on by default, ca_file, tls_verify: false,
hostname/IP checks.  The upstream is Python's ssl module with a certificate
made for the test by the openssl command."""
import json
import os
import ssl
import subprocess

from harness import FakeUpstream, basic_config, chat, json_response, metrics, post


def make_cert(tmp, san):
    key, crt = os.path.join(tmp, "key.pem"), os.path.join(tmp, "crt.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=shade-test", "-addext", f"subjectAltName={san}",
                    "-keyout", key, "-out", crt], check=True, capture_output=True)
    return key, crt


def tls_upstream(key, crt):
    """A FakeUpstream behind TLS; .sni lists the server names clients sent."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    sni = []
    ctx.sni_callback = lambda sock, name, c: sni.append(name)
    up = FakeUpstream(lambda req: json_response({
        "object": "chat.completion", "tls": True,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "secure"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}), ssl_ctx=ctx)
    up.sni = sni
    return up


def tls_config(port, extra, host="127.0.0.1"):
    return basic_config(port, backend_extra=extra).replace(f"http://127.0.0.1:{port}", f"https://{host}:{port}")


def test_tls_verified_with_ca_file(env):
    key, crt = make_cert(env.tmp, "IP:127.0.0.1")
    up = tls_upstream(key, crt)
    gw = env.gateway(tls_config(up.port, f"ca_file: {crt}"))
    for _ in range(3):  # the second and third reuse the kept-alive TLS connection
        st, _, body = post(gw, chat())
        assert st == 200 and json.loads(body)["tls"] is True, body
    assert up.sni and all(n is None for n in up.sni), f"no SNI may be sent for an IP address: {up.sni}"


def test_tls_untrusted_certificate_refused(env):
    key, crt = make_cert(env.tmp, "IP:127.0.0.1")
    up = tls_upstream(key, crt)
    gw = env.gateway(tls_config(up.port, ""))  # system store: does not trust the test CA
    st, _, body = post(gw, chat())
    assert st == 502, body
    assert metrics(gw)['shade_upstream_errors_total{model="demo",backend="b0",kind="tls"}'] == 1


def test_tls_wrong_name_refused_unless_verify_off(env):
    key, crt = make_cert(env.tmp, "DNS:other.example")
    up = tls_upstream(key, crt)
    gw = env.gateway(tls_config(up.port, f"ca_file: {crt}"))
    assert post(gw, chat())[0] == 502
    gw2 = env.gateway(tls_config(up.port, "tls_verify: false"))
    assert post(gw2, chat())[0] == 200


def test_tls_hostname_and_sni(env):
    key, crt = make_cert(env.tmp, "DNS:localhost")
    up = tls_upstream(key, crt)
    gw = env.gateway(tls_config(up.port, f"ca_file: {crt}", host="localhost"))
    st, _, body = post(gw, chat())
    assert st == 200, body
    assert up.sni and up.sni[0] == "localhost"
