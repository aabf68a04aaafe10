"""Explorer latency: a sample of 10 and an 8-step homotopy through `textvae serve`'s HTTP endpoints.

    python scripts/benchmark_serve.py --model runs/default [--repeats 30] [--threads 1]

Starts the server in-process on a free loopback port, warms it up (the map is built once), then
times each request end to end with urllib (client, HTTP and model) and prints the median, the
90th percentile and the slowest, in milliseconds, as one JSON object per request kind.
"""
import argparse
import json
import statistics
import threading
import time
import urllib.request

import torch

from textvae import TextVAE
from textvae.serve import Explorer, make_server


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = TextVAE.from_pretrained(args.model)
    httpd = make_server(Explorer(model, name=args.model), "127.0.0.1", 0, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = "http://%s:%d" % httpd.server_address[:2]
    with urllib.request.urlopen(base + "/api/map", timeout=120) as r:  # built once, before timing
        points = json.loads(r.read())["points"]
    a, b = points[0]["text"], max((p["text"] for p in points[1:]), key=len)
    requests = {"sample n=10": ("/api/sample", {"n": 10}),
                "homotopy steps=8 (posterior)": ("/api/interpolate", {"a": a, "b": b, "steps": 8}),
                "homotopy steps=8 (prior)": ("/api/interpolate", {"mode": "prior", "steps": 8})}
    for name, (path, body) in requests.items():
        times = []
        for i in range(args.repeats + 3):
            t0 = time.perf_counter()
            post(base, path, {**body, "seed": i})
            if i >= 3:  # three warm-up requests
                times.append(1000 * (time.perf_counter() - t0))
        times.sort()
        print(json.dumps({"request": name, "ms_median": round(statistics.median(times), 1),
                          "ms_p90": round(times[int(0.9 * (len(times) - 1))], 1), "ms_max": round(times[-1], 1),
                          "repeats": args.repeats, "torch_threads": args.threads}))
    httpd.shutdown()


if __name__ == "__main__":
    main()
