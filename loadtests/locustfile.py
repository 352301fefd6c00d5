"""The same scenarios for Locust users: `locust -f loadtests/locustfile.py --host http://127.0.0.1:8000`.

tests/test_locustfile.py runs it headless against the live server (every task, no failure).
Pick a scenario with `--tags`: single, multi-image, mixed-models, ab, bad-inputs. Locust users are a
closed loop; `LOCUST_RATE` (requests/s per user) paces them with constant_throughput, which approximates
an open loop only while the server keeps up (Locust measures from the actual send, not the schedule, so
`python -m loadtests rate-sweep` is the honest open-loop figure). `RESFAM_API_KEY`: a key for a server that
asks for one, sent as `Authorization: Bearer <key>` (it needs the `classify` scope).
"""
from __future__ import annotations

import itertools
import os
import random

from locust import HttpUser, constant, constant_throughput, tag, task

from loadtests.photos import bad_inputs, digit_pngs

MODELS = os.environ.get("LOCUST_MODELS", "seresnet20_digits,resnext20_digits").split(",")
RATE = float(os.environ.get("LOCUST_RATE", "0"))
PNG = {"Content-Type": "image/png"}
API_KEY = os.environ.get("RESFAM_API_KEY")


class ClassifyUser(HttpUser):
    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)

    def on_start(self) -> None:
        self.images = itertools.cycle(digit_pngs())
        self.user_id = f"locust-{random.randrange(10**9)}"
        if API_KEY:
            self.client.headers["Authorization"] = f"Bearer {API_KEY}"

    @tag("single")
    @task
    def single(self) -> None:
        self.client.post("/classify", data=next(self.images), headers=PNG, params={"model": MODELS[0]},
                         name="/classify single")

    @tag("multi-image")
    @task
    def multi_image(self) -> None:
        files = [("file", (f"{i}.png", next(self.images), "image/png")) for i in range(8)]
        self.client.post("/classify", files=files, params={"model": MODELS[0]}, name="/classify x8")

    @tag("mixed-models")
    @task
    def mixed_models(self) -> None:
        model = random.choice(MODELS)
        self.client.post("/classify", data=next(self.images), headers=PNG, params={"model": model},
                         name=f"/classify {model}")

    @tag("ab")
    @task
    def ab(self) -> None:
        self.client.post("/classify", data=next(self.images), headers={**PNG, "X-User-Id": self.user_id},
                         name="/classify ab")

    @tag("bad-inputs")
    @task
    def bad_input(self) -> None:
        kind, (data, content_type) = random.choice(list(bad_inputs().items()))
        with self.client.post("/classify", data=data, headers={"Content-Type": content_type},
                              name=f"/classify bad {kind}", catch_response=True) as response:
            if 400 <= response.status_code < 500:
                response.success()  # the expected answer to a bad input
            else:
                response.failure(f"bad input {kind} got {response.status_code}, expected 4xx")
