"""``textvae serve``: a local web page to explore a model's latent space.

One static page (``explorer.html``, plain JavaScript, no build step) over JSON endpoints served by
the standard library's ``ThreadingHTTPServer``:

    GET  /                  the page
    GET  /api/info          the model: latent size, labels, the limits below
    GET  /api/map           posterior means of a split on their first two principal axes, with
                            each sentence, its label and known factors (computed once, at most
                            ``map_points``); a 404 saying why where the split cannot be read
                            here, the other endpoints then drawing on latent dimensions 0 and 1
    POST /api/sample        {n, temperature, top_p, seed, max_len}: prior samples and their codes
                            (every endpoint that decodes takes max_len; default: the model's own
                            longest sentence, see :class:`Limits`)
    POST /api/reconstruct   {sentence}: greedy decoding of its posterior mean
    POST /api/interpolate   {a, b, steps, mode: posterior|prior, seed}: a homotopy (Bowman et al.
                            2016, sec. 5), every step's sentence and its point on the map
    POST /api/encode        {sentence}: its code, to start the sliders from
    POST /api/decode        {z}: greedy decoding of a code (one value per latent dimension)

Every answer is JSON; bad input (empty or over-long text, bytes that are not UTF-8, numbers out of
range) is a 400 whose ``error`` says what to change, and the server goes on serving. The work of
one request is bounded by :class:`Limits` (sentences, steps, tokens), and model calls take turns
behind one lock, so no request holds the model for long. The server binds to 127.0.0.1 unless told
otherwise: it has no authentication.
"""

import json
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import torch

from .config import DataConfig, SampleConfig
from .errors import TextVAEError


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: the bound on its work."""

    max_chars: int = 1000  # characters of a typed sentence
    max_body: int = 64 * 1024  # bytes of a request body
    max_n: int = 50  # sentences sampled at once
    max_steps: int = 50  # homotopy points strictly between the ends
    # tokens decoded per sentence, and the default; None: the model's data.max_len, the longest sentence it
    # was trained on (a 7x8 poem's 64 characters on a model of 7x8 poems), so no sentence it writes is cut
    max_len: int | None = None
    max_abs_z: float = 10.0  # a slider code's coordinates, |z_i|
    map_points: int = 1000  # sentences on the map (the first ones of the split)


class BadRequest(TextVAEError):
    """Input the explorer refuses, with the HTTP status to answer."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- checking input


def _number(params: dict, key: str, default, lo, hi, kind=float):
    value = params.get(key, default)
    if isinstance(value, str):  # a form field as text
        try:
            value = kind(value.strip())
        except ValueError:
            raise BadRequest(f"{key} must be a {'whole ' if kind is int else ''}number, got {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{key} must be a {'whole ' if kind is int else ''}number, got {json.dumps(value)[:40]}")
    # the range first: NaN and infinities fail it (int() of them raises), and it compares huge ints exactly
    if not lo <= value <= hi:
        raise BadRequest(f"{key} must be between {lo} and {hi}, got {value}")
    if kind is int and value != int(value):
        raise BadRequest(f"{key} must be a whole number, got {json.dumps(value)[:40]}")
    return kind(value)


def _text(params: dict, key: str, limits: Limits) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key} is empty; type a sentence")
    if len(value) > limits.max_chars:
        raise BadRequest(f"{key} is {len(value):,} characters long; the limit is {limits.max_chars:,}")
    return value.strip()


class Explorer:
    """The endpoints' work, on a loaded model; each method takes the request's parameters (a dict)
    and returns a JSON-ready dict, or raises :class:`BadRequest`."""

    def __init__(self, model, split: str = "valid", limits: Limits = Limits(), name: str = "model"):
        if model.is_lm:
            raise TextVAEError(f"{name} is a language model (latent_dim=0): it has no latent space to explore")
        if model.latent.discrete:
            raise TextVAEError(f"{name} has discrete codes (model.latent={model.config.latent}): the explorer's map of "
                               f"posterior means and its sliders need a continuous latent; use textvae sample, "
                               f"reconstruct and interpolate --path codes (docs/latents.md)")
        if limits.max_len is None:
            limits = replace(limits, max_len=(model.extra_config.get("data") or {}).get("max_len")
                             or DataConfig().max_len)
        self.model, self.split, self.limits, self.name = model, split, limits, name
        self.lock = threading.Lock()  # model calls take turns; each is bounded by self.limits
        self._map, self._mean, self._axes = None, None, None  # the map, its centre and axes (2, Z)

    def _label(self, params: dict):
        if not self.model.conditional:
            return None
        label = params.get("label") or self.model.label_names[0]
        if label not in self.model.label_names:
            raise BadRequest(f"label {str(label)[:40]!r} is not one of this model's {self.model.label_names[:20]}")
        return label

    def _decoding(self, params: dict, greedy: bool) -> SampleConfig:
        return SampleConfig(max_len=_number(params, "max_len", self.limits.max_len, 1, self.limits.max_len, int),
                            greedy=greedy,
                            temperature=_number(params, "temperature", 1.0, 0.05, 5.0),
                            top_p=_number(params, "top_p", 1.0, 0.01, 1.0))

    def _points(self, sentences: list[str], label) -> torch.Tensor:
        """Point codes (B, Z) of typed sentences; words the model does not know become <unk>."""
        for s in sentences:
            if not self.model.tokenizer.encode(s):
                raise BadRequest(f"{s[:40]!r} has no tokens this model can read; type words")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.model.encode_points(sentences, label)

    def info(self, params: dict | None = None) -> dict:
        m = self.model
        return {"model": self.name, "latent_dim": m.latent_dim, "latent": m.config.latent,
                "labels": m.label_names if m.conditional else None, "split": self.split,
                "centre": [round(v, 5) for v in m.latent.prior_point().tolist()],
                "limits": asdict(self.limits)}

    def map(self, params: dict | None = None) -> dict:
        """The map (computed on first use): PCA of the split's posterior means."""
        with self.lock:
            if self._map is None:
                self._map = self._build_map()
        if "error" in self._map:
            raise BadRequest(self._map["error"], HTTPStatus.NOT_FOUND)
        return self._map["answer"]

    def _build_map(self) -> dict:
        """The map, or where the split cannot be read here (a model from the hub or another machine
        whose corpus is not on this one) its error and the map's fallback axes, latent dimensions 0
        and 1 around the prior's centre: the other endpoints still answer, with points on them."""
        try:
            return self._build_pca_map()
        except (TextVAEError, OSError) as e:
            dim = self.model.latent_dim
            self._mean = self.model.latent.prior_point().double().cpu()
            self._axes = torch.eye(max(dim, 2), dtype=torch.float64)[:2, :dim]  # (2, Z)
            why = str(e).split("; ")[0][:300]  # the fact, without advice for another command
            return {"error": f"no map: the {self.split} split of the model's corpus cannot be read here ({why}); "
                             f"sampling, reconstruction, interpolation and the sliders still work, their points "
                             f"drawn on latent dimensions 0 and 1"}

    def _build_pca_map(self) -> dict:
        from .data import EncodedSplit
        from .metrics import model_split, posterior_parameters

        full = model_split(self.model, self.split)
        n = min(len(full), self.limits.map_points)
        enc = EncodedSplit(full.ids[:n], full.texts[:n], full.labels[:n] if full.labels is not None else None,
                           full.label_ids[:n] if full.label_ids is not None else None)
        mu, _ = posterior_parameters(self.model, enc)  # (N, Z)
        mean = mu.double().mean(0)
        _, s, vh = torch.linalg.svd(mu.double() - mean, full_matrices=False)
        axes = vh[:2] if vh.size(0) >= 2 else torch.cat([vh, torch.zeros(2 - vh.size(0), vh.size(1)).double()])
        share = (s.pow(2) / s.pow(2).sum().clamp_min(1e-300))[:2].tolist()
        self._mean, self._axes = mean, axes
        xy = self._project(mu)
        labels = [str(x) for x in enc.labels[:n]] if enc.labels is not None else None
        points = [{"x": x, "y": y, "text": t, "label": labels[i] if labels else None}
                  for i, ((x, y), t) in enumerate(zip(xy, enc.texts))]
        colourings = {"label": labels} if labels else {}
        colourings.update({k: v[:n] for k, v in self._factors(full).items() if v[:n] != labels})  # topic = label
        return {"answer": {"split": self.split, "points": points, "explained": share + [0.0] * (2 - len(share)),
                           "labels": sorted(set(labels)) if labels else [], "colourings": colourings}}

    def _factors(self, full) -> dict[str, list[str]]:
        """The split's known factors ({factor: label per example}: the built-in corpus's topic, tense,
        sentiment and length, ``{split}.{factor}.labels.txt`` files), when they line up with its
        encoded examples; {} otherwise."""
        from .disentanglement import read_factors
        from .metrics import model_data

        if full.stats.get("dropped"):  # examples dropped when encoding: the factor files no longer line up
            return {}
        try:
            factors = read_factors(model_data(self.model), self.split)
        except TextVAEError:
            return {}
        return {k: [str(x) for x in v] for k, v in factors.items() if len(v) == len(full) and k != "label"}

    def _project(self, z: torch.Tensor) -> list[list[float]]:
        """Codes (N, Z) on the map's two axes (the map is built first when needed)."""
        if self._axes is None:  # called with self.lock held
            self._map = self._build_map()
        return [[round(v, 5) for v in row] for row in ((z.double().cpu() - self._mean) @ self._axes.T).tolist()]

    def sample(self, params: dict) -> dict:
        n = _number(params, "n", 10, 1, self.limits.max_n, int)
        seed = _number(params, "seed", 0, 0, 2**31 - 1, int)
        sc, label = self._decoding(params, greedy=False), self._label(params)
        with self.lock:
            g = torch.Generator().manual_seed(seed)  # as TextVAE.sample: codes, then decoding noise
            z = self.model.prior_sample(n, g)
            texts = self.model.decode(z, sc, generator=g, label=label)
            xy = self._project(z)
        return {"sentences": texts, "points": xy}

    def reconstruct(self, params: dict) -> dict:
        sentence, label = _text(params, "sentence", self.limits), self._label(params)
        sc = self._decoding(params, greedy=True)
        with self.lock:
            z = self._points([sentence], label)
            text = self.model.decode(z, sc, label=label)[0]
            xy = self._project(z)
        return {"sentence": sentence, "reconstruction": text, "point": xy[0]}

    def interpolate(self, params: dict) -> dict:
        mode = params.get("mode", "posterior")
        if mode not in ("posterior", "prior"):
            raise BadRequest(f"mode must be 'posterior' (between two sentences) or 'prior' (between two prior "
                             f"samples), got {str(mode)[:40]!r}")
        steps = _number(params, "steps", 8, 1, self.limits.max_steps, int)
        label, sc = self._label(params), self._decoding(params, greedy=True)
        if mode == "posterior":
            a, b = _text(params, "a", self.limits), _text(params, "b", self.limits)
        else:
            seed = _number(params, "seed", 0, 0, 2**31 - 1, int)
        with self.lock:
            if mode == "posterior":
                ends = self._points([a, b], label)
            else:
                ends = self.model.prior_sample(2, torch.Generator().manual_seed(seed))
            path = self.model.latent.interpolate(ends[0], ends[1], steps)  # (steps + 2, Z)
            texts = self.model.decode(path, sc, label=label)
            xy = self._project(path)
        return {"mode": mode, "steps": [{"text": t, "point": p} for t, p in zip(texts, xy)]}

    def encode(self, params: dict) -> dict:
        sentence, label = _text(params, "sentence", self.limits), self._label(params)
        with self.lock:
            z = self._points([sentence], label)
            xy = self._project(z)
        return {"z": [round(v, 5) for v in z[0].tolist()], "point": xy[0]}

    def decode(self, params: dict) -> dict:
        z, dim, bound = params.get("z"), self.model.latent_dim, self.limits.max_abs_z
        if not (isinstance(z, list) and len(z) == dim):
            raise BadRequest(f"z must be a list of {dim} numbers (one per latent dimension)")
        values = [_number({"z": v}, "z", 0, -bound, bound) for v in z]
        label, sc = self._label(params), self._decoding(params, greedy=True)
        with self.lock:
            code = torch.tensor([values], dtype=torch.float32)
            text = self.model.decode(code, sc, label=label)[0]
            xy = self._project(code)
        return {"text": text, "point": xy[0]}


def _methods_in_use() -> str:
    gets = ", ".join(p for m, p in ROUTES if m == "GET")
    return f"use GET for the page (/), {gets}, and POST with a JSON body for " + \
        ", ".join(p for m, p in ROUTES if m == "POST")


ROUTES = {("GET", "/api/info"): "info", ("GET", "/api/map"): "map", ("POST", "/api/sample"): "sample",
          ("POST", "/api/reconstruct"): "reconstruct", ("POST", "/api/interpolate"): "interpolate",
          ("POST", "/api/encode"): "encode", ("POST", "/api/decode"): "decode"}


# ----------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    """One request: the page, or a route of :data:`ROUTES` answered with JSON."""

    server_version = "textvae-explorer"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a connection may stay silent (a body announced and never sent) before it is closed

    def do_GET(self):
        if self.path.split("?", 1)[0] in ("/", "/index.html"):
            page = resources.files("textvae").joinpath("explorer.html").read_bytes()
            return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        self._route("GET", {})

    def do_HEAD(self):  # the page's headers (HTTP/1.1 servers answer HEAD wherever they answer GET)
        if self.path.split("?", 1)[0] in ("/", "/index.html"):
            page = resources.files("textvae").joinpath("explorer.html").read_bytes()
            return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8", head=True)
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"", "application/json", head=True, allow="GET, POST")

    def _other_method(self):
        """PUT, DELETE, PATCH, OPTIONS: a 405 naming the methods of each route (the standard library's
        answer was a 501 HTML page). A body they carry is not read: the connection is closed."""
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"the explorer does not answer {self.command}; "
                                                            f"{_methods_in_use()}"}, close=True, allow="GET, POST")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other_method

    def do_POST(self):
        try:
            params = self._body()
        except BadRequest as e:
            return self._json(e.status, {"error": str(e)}, close=True)
        self._route("POST", params)

    def _body(self) -> dict:
        limit = self.server.explorer.limits.max_body
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise BadRequest("the request needs a Content-Length header", HTTPStatus.LENGTH_REQUIRED) from None
        if length < 0:
            raise BadRequest(f"Content-Length is {length}; give the body's size in bytes")
        if length > limit:
            raise BadRequest(f"the request body is {length:,} bytes; the limit is {limit:,}",
                             HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        raw = self.rfile.read(length)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"the request is not valid UTF-8 text (byte {raw[e.start]:#04x} at position {e.start}); "
                             f"send UTF-8") from None
        try:
            params = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise BadRequest(f"the request is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # a number of over 4,300 digits, arrays nested too deep
            raise BadRequest(f"the request could not be read as JSON ({(str(e) or type(e).__name__)[:80]}); send "
                             f"a plain JSON object of short numbers and strings") from None
        if not isinstance(params, dict):
            raise BadRequest("the request must be a JSON object, e.g. {\"sentence\": \"...\"}")
        return params

    def _route(self, method: str, params: dict):
        path = self.path.split("?", 1)[0]
        name = ROUTES.get((method, path))
        if name is None:
            other = next((m for m, p in ROUTES if p == path), None)
            if other:  # e.g. GET /api/sample
                how = " with a JSON body" if other == "POST" else ""
                return self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} {path}: use {other}{how}"},
                                  allow=other)
            known = sorted({p for m, p in ROUTES if m == method})
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no {method} {path[:60]}; try one of {known}"})
        start = time.perf_counter()
        try:
            answer = getattr(self.server.explorer, name)(params)
        except BadRequest as e:
            return self._json(e.status, {"error": str(e)})
        except TextVAEError as e:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        except Exception as e:  # noqa: BLE001 - one failed request must not stop the server
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(e).__name__}: {e}"})
        answer["ms"] = round(1000 * (time.perf_counter() - start), 1)
        self._json(HTTPStatus.OK, answer)

    def _json(self, status: int, answer: dict, close: bool = False, allow: str | None = None):
        self._send(status, json.dumps(answer).encode("utf-8"), "application/json", close, allow=allow)

    def _send(self, status: int, body: bytes, kind: str, close: bool = False, head: bool = False,
              allow: str | None = None):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if allow:  # a 405's methods
            self.send_header("Allow", allow)
        if close:  # the body was not read (or not all of it): the connection cannot be reused
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format, *args):
        if not self.server.quiet:
            sys.stderr.write(f"textvae serve: {self.address_string()} {format % args}\n")


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False):
    """A ThreadingHTTPServer answering for ``explorer`` (port 0: a free port, see ``server_address``)."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.explorer, server.quiet = explorer, quiet
    return server
