"""The explorer's JSON endpoints through a real server on a free loopback port (urllib, in-process)."""
import http.client
import json
import threading
import urllib.request

import pytest
import torch

from textvae import TextVAE
from textvae.serve import BadRequest, Explorer, Limits, make_server


@pytest.fixture(scope="module")
def server(tiny_run):
    model = TextVAE.from_pretrained(tiny_run)
    httpd = make_server(Explorer(model, "valid", Limits(map_points=20), name="tiny"), "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, model
    httpd.shutdown()
    httpd.server_close()


def request(server, path, body=None, raw=None):
    """(status, JSON answer) of GET path, or POST of ``body`` as JSON (or ``raw`` bytes)."""
    host, port = server[0].server_address[:2]
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_page_info_and_map(server):
    host, port = server[0].server_address[:2]
    assert host == "127.0.0.1"
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=30) as r:
        page = r.read().decode()
    assert r.headers["Content-Type"].startswith("text/html") and 'id="map"' in page and "/api/interpolate" in page
    status, info = request(server, "/api/info")
    assert status == 200 and info["latent_dim"] == 4 and info["limits"]["max_chars"] == 1000
    status, m = request(server, "/api/map")
    assert status == 200 and len(m["points"]) == 20  # the 30 valid sentences, capped
    assert {p["label"] for p in m["points"]} <= set(m["labels"]) and len(m["labels"]) >= 2  # built-in topics
    assert all(isinstance(p["text"], str) and p["text"] for p in m["points"])
    colourings = m["colourings"]  # the corpus's label, then the built-in corpus's other factors
    assert list(colourings) == ["label", "tense", "sentiment", "length"]
    assert colourings["label"] == [p["label"] for p in m["points"]]
    assert set(colourings["tense"]) == {"past", "present", "future"} and len(colourings["tense"]) == 20
    assert 0 < m["explained"][1] <= m["explained"][0] <= 1


def test_sample_reconstruct_interpolate_decode_match_the_api(server):
    _, model = server
    status, s = request(server, "/api/sample", {"n": 5, "seed": 7, "temperature": 0.8, "top_p": 0.9})
    from textvae.config import SampleConfig

    assert status == 200 and s["sentences"] == model.sample(5, SampleConfig(max_len=40, temperature=0.8, top_p=0.9),
                                                            seed=7)
    assert len(s["points"]) == 5 and all(len(p) == 2 for p in s["points"])
    a, b = m_texts = [p["text"] for p in request(server, "/api/map")[1]["points"][:2]]
    status, h = request(server, "/api/interpolate", {"a": a, "b": b, "steps": 3})
    assert status == 200 and [x["text"] for x in h["steps"]] == model.interpolate(a, b, 3, SampleConfig(max_len=40,
                                                                                                      greedy=True))
    status, h = request(server, "/api/interpolate", {"mode": "prior", "steps": 2, "seed": 1})
    assert status == 200 and len(h["steps"]) == 4
    status, r = request(server, "/api/reconstruct", {"sentence": m_texts[0]})
    assert status == 200 and r["reconstruction"] == model.reconstruct([m_texts[0]], SampleConfig(max_len=40, greedy=True))[0]
    status, e = request(server, "/api/encode", {"sentence": m_texts[0]})
    status, d = request(server, "/api/decode", {"z": e["z"]})
    assert status == 200 and d["text"] == r["reconstruction"] and d["point"] == pytest.approx(r["point"], abs=1e-4)


@pytest.mark.parametrize("path, body, needle", [
    ("/api/reconstruct", {"sentence": ""}, "sentence is empty"),
    ("/api/reconstruct", {"sentence": "   "}, "sentence is empty"),
    ("/api/reconstruct", {"sentence": "a " * 5000}, "sentence is 10,000 characters long; the limit is 1,000"),
    ("/api/interpolate", {"a": "x .", "b": "y .", "steps": -3}, "steps must be between 1 and 50, got -3"),
    ("/api/interpolate", {"a": "x .", "b": "y .", "steps": 10**9}, "steps must be between 1 and 50"),
    ("/api/interpolate", {"a": "x .", "b": "y .", "steps": "many"}, "steps must be a whole number"),
    ("/api/interpolate", {"a": "x .", "steps": 2}, "b is empty"),
    ("/api/interpolate", {"mode": "sideways"}, "mode must be 'posterior'"),
    ("/api/sample", {"n": 0}, "n must be between 1 and 50, got 0"),
    ("/api/sample", {"temperature": float("nan")}, "temperature must be between"),
    ("/api/sample", {"n": 2.5}, "n must be a whole number"),
    ("/api/decode", {"z": [0, 0]}, "z must be a list of 4 numbers"),
    ("/api/decode", {"z": [0, 0, 0, 1e9]}, "z must be between -10.0 and 10.0"),
    ("/api/sample", [1, 2], "must be a JSON object"),
    ("/api/sample", {"n": 10**400}, "n must be between 1 and 50"),  # too large for a float
    ("/api/sample", {"temperature": 10**400}, "temperature must be between 0.05 and 5.0"),
    ("/api/sample", {"n": float("nan")}, "n must be between 1 and 50, got nan"),
    ("/api/sample", {"seed": float("inf")}, "seed must be between 0 and"),
    ("/api/decode", {"z": [0, 0, 0, -10**400]}, "z must be between -10.0 and 10.0"),
])
def test_bad_input_is_a_400_with_a_message(server, path, body, needle):
    status, answer = request(server, path, body)
    assert status == 400 and needle in answer["error"], answer


def test_bad_bytes_and_sizes_then_the_server_still_serves(server):
    status, answer = request(server, "/api/reconstruct", raw=b'{"sentence": "caf\xe9 \xff"}')
    assert status == 400 and "not valid UTF-8" in answer["error"] and "0xe9" in answer["error"]
    status, answer = request(server, "/api/reconstruct", raw=b'{"sentence": ')
    assert status == 400 and "not valid JSON" in answer["error"]
    host, port = server[0].server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", "/api/sample")
    conn.putheader("Content-Length", str(10**8))  # announced, never sent: refused before reading
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "limit is 65,536" in json.loads(r.read())["error"]
    conn.close()
    stalled = http.client.HTTPConnection(host, port, timeout=30)
    stalled.putrequest("POST", "/api/sample")
    stalled.putheader("Content-Length", "100")  # a body announced and never sent holds only its own thread
    stalled.endheaders()
    status, s = request(server, "/api/sample", {"n": 1})
    assert status == 200 and len(s["sentences"]) == 1
    stalled.close()
    status, answer = request(server, "/api/nowhere", {})
    assert status == 404 and "/api/sample" in answer["error"]
    status, s = request(server, "/api/sample", {"n": 2})
    assert status == 200 and len(s["sentences"]) == 2


def test_cli_serve_refuses_a_language_model(tmp_path, capsys):
    from helpers import TINY, expect_error
    from textvae.cli import main

    run = tmp_path / "lm"
    assert main(["train", *TINY, "--out", str(run), "train.max_steps=1", "model.latent_dim=0"]) == 0
    expect_error(capsys, ["serve", "--model", run, "--port", "0"], "language model", "no latent space to explore")
    vq = tmp_path / "vq"
    assert main(["train", *TINY, "--out", str(vq), "train.max_steps=1", "model.latent=vq", "model.latent_vars=2",
                 "model.latent_classes=4"]) == 0
    expect_error(capsys, ["serve", "--model", vq, "--port", "0"], "has discrete codes", "interpolate --path codes")


def test_a_conditional_model_decodes_with_the_label_asked_for():
    from pathlib import Path

    from textvae.config import SampleConfig

    model = TextVAE.from_pretrained(Path(__file__).parent / "fixtures" / "v0.1.0" / "conditional")
    explorer = Explorer(model, name="conditional")
    label = model.label_names[1]
    assert explorer.info({})["labels"] == model.label_names and explorer.info({})["centre"] == [0.0] * model.latent_dim
    got = explorer.sample({"n": 3, "seed": 4, "label": label})["sentences"]
    assert got == model.sample(3, SampleConfig(max_len=40), seed=4, label=label)
    with pytest.raises(BadRequest, match="label 'nope' is not one of"):
        explorer.sample({"label": "nope"})


def test_cli_serve_binds_to_loopback_and_warns_for_other_hosts(tiny_run, capsys, monkeypatch):
    from http.server import ThreadingHTTPServer

    from helpers import cli

    bound = []

    def stop_at_once(self, *args, **kwargs):  # as if Ctrl-C came as soon as the server was up
        bound.append(self.server_address)
        raise KeyboardInterrupt

    monkeypatch.setattr(ThreadingHTTPServer, "serve_forever", stop_at_once)
    _, err = cli(capsys, ["serve", "--model", tiny_run, "--port", 0], code=130)
    host, port = bound[0][:2]
    assert host == "127.0.0.1" and port > 0 and f"at http://127.0.0.1:{port}/" in err and "warning" not in err
    _, err = cli(capsys, ["serve", "--model", tiny_run, "--port", 0, "--host", "0.0.0.0"], code=130)
    assert "warning: listening on 0.0.0.0: anyone who can reach it can use the model" in err


@pytest.mark.parametrize("raw", [b'{"n": 1' + b"0" * 5000 + b"}", b"[" * 30000 + b"]" * 30000],
                         ids=["5001-digit number", "arrays nested 30,000 deep"])
def test_json_that_python_refuses_to_parse_is_a_400_not_a_dropped_connection(server, raw):
    status, answer = request(server, "/api/sample", raw=raw)
    assert status == 400 and "could not be read as JSON" in answer["error"], answer
    status, s = request(server, "/api/sample", {"n": 1})
    assert status == 200 and len(s["sentences"]) == 1


def test_a_model_whose_corpus_is_not_here_is_explored_without_a_map(tiny_run, tmp_path):
    """A model from the hub or another machine names a corpus folder this machine lacks: the map
    cannot be built. Every endpoint used to build it first (to place its points) and so failed with
    the corpus's error; now only the map is refused, once, and the rest works on latent dims 0 and 1."""
    from textvae.config import SampleConfig

    model = TextVAE.from_pretrained(tiny_run)
    model.extra_config = {"data": {**model.extra_config["data"], "data_dir": str(tmp_path / "elsewhere")}}
    explorer = Explorer(model, "valid", name="moved")
    with pytest.raises(BadRequest, match=r"no map: the valid split of the model's corpus cannot be read here "
                                         r"\(.*elsewhere does not exist\); sampling, .* latent dimensions 0 and 1") as e:
        explorer.map({})
    assert e.value.status == 404
    s = explorer.sample({"n": 3, "seed": 2})
    z = model.prior_sample(3, torch.Generator().manual_seed(2))
    assert s["sentences"] == model.sample(3, SampleConfig(max_len=40), seed=2)
    assert torch.allclose(torch.tensor(s["points"]), z[:, :2], atol=1e-4)  # the first two coordinates
    r = explorer.reconstruct({"sentence": "the cat sat ."})
    assert r["reconstruction"] == model.reconstruct(["the cat sat ."], SampleConfig(max_len=40, greedy=True))[0]
    assert len(explorer.interpolate({"a": "the cat sat .", "b": "a dog ran .", "steps": 2})["steps"]) == 4
    code = explorer.encode({"sentence": "the cat sat ."})["z"]
    assert explorer.decode({"z": code})["point"] == pytest.approx(code[:2], abs=1e-4)
    with pytest.raises(BadRequest, match="no map"):
        explorer.map({})



@pytest.mark.parametrize("method, path, status, needle, allow", [
    ("PUT", "/api/sample", 405, "does not answer PUT; use GET for the page (/), /api/info, /api/map, and POST", "GET, POST"),
    ("DELETE", "/api/map", 405, "does not answer DELETE", "GET, POST"),
    ("OPTIONS", "/", 405, "does not answer OPTIONS", "GET, POST"),
    ("GET", "/api/sample", 405, "GET /api/sample: use POST with a JSON body", "POST"),
    ("POST", "/api/info", 405, "POST /api/info: use GET", "GET"),
])
def test_a_method_a_route_does_not_take_is_a_405_with_a_message(server, method, path, status, needle, allow):
    """PUT, DELETE, OPTIONS were the standard library's 501 HTML page; GET on a POST route a 404 as if it did not exist."""
    host, port = server[0].server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request(method, path, body=b"{}" if method in ("PUT", "POST") else None)
    r = conn.getresponse()
    answer = json.loads(r.read())
    conn.close()
    assert (r.status, r.headers["Allow"]) == (status, allow) and needle in answer["error"], answer
    assert request(server, "/api/sample", {"n": 1})[0] == 200


def test_head_gives_the_pages_headers_and_a_negative_length_is_a_400(server):
    host, port = server[0].server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("HEAD", "/")
    r = conn.getresponse()
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html") and r.read() == b""
    conn.request("GET", "/")  # the same connection: the HEAD answer sent no body to misread
    page = conn.getresponse()
    assert int(r.headers["Content-Length"]) == len(page.read()) and page.status == 200
    conn.putrequest("POST", "/api/sample")
    conn.putheader("Content-Length", "-1")
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 400 and "Content-Length is -1" in json.loads(r.read())["error"]
    conn.close()


def test_the_decoding_limit_follows_the_model(tiny_run):
    """The explorer decoded 40 tokens unless a request asked for more, and never more than 60, whatever the
    model: a model of 7x8 poems (64 characters) never showed one whole. The limit, and the default, is now
    the model's data.max_len, the longest sentence it was trained on."""
    from textvae.config import SampleConfig

    model = TextVAE.from_pretrained(tiny_run)
    model.extra_config = {"data": {**model.extra_config["data"], "max_len": 72}}
    explorer = Explorer(model, "valid", Limits(map_points=20), name="long")
    assert explorer.info({})["limits"]["max_len"] == 72
    s = explorer.sample({"n": 20, "seed": 3})["sentences"]
    assert s == model.sample(20, SampleConfig(max_len=72), seed=3)
    assert max(len(model.tokenizer.encode(t)) for t in s) > 60  # the untrained model runs on: cut at 72, not 60
    assert explorer.sample({"n": 20, "seed": 3, "max_len": 30})["sentences"] == \
        model.sample(20, SampleConfig(max_len=30), seed=3)
    code = explorer.encode({"sentence": "the cat sat ."})["z"]
    assert explorer.decode({"z": code})["text"] == model.decode(torch.tensor([code]), SampleConfig(max_len=72,
                                                                                                  greedy=True))[0]
    with pytest.raises(BadRequest, match="max_len must be between 1 and 72, got 73"):
        explorer.reconstruct({"sentence": "the cat sat .", "max_len": 73})
    assert Explorer(model, limits=Limits(max_len=30)).info({})["limits"]["max_len"] == 30  # a limit of one's own
    model.extra_config = {}  # a model built in Python, not trained by textvae: the default data.max_len
    assert Explorer(model).limits.max_len == 100
