"""ScorerClient: a small synchronous HTTP client of the scoring service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from schemas.requests import ScoreResponse


class ScorerError(RuntimeError):
    """The service refused or failed a request; `status` is the HTTP status, `message` its reason."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class ScorerClient:
    """`ScorerClient("http://127.0.0.1:8080").score("u1", ["1", "2"], top_k=10)` -> ScoreResponse."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0):
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)

    def __enter__(self) -> ScorerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def score(self, user_id: str, candidates: Sequence[str | int], top_k: int | None = None,
              request_id: str | None = None) -> ScoreResponse:
        body: dict[str, Any] = {"user_id": user_id, "candidates": [str(c) for c in candidates]}
        if top_k is not None:
            body["top_k"] = top_k
        if request_id is not None:
            body["request_id"] = request_id
        return ScoreResponse.model_validate_json(self._checked(self._http.post("/v1/score", json=body)).content)

    def items(self) -> list[str]:
        """Every known item id of the served model (for ranking all items)."""
        return list(self._checked(self._http.get("/v1/items")).json()["items"])

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200

    def health(self) -> dict[str, Any]:
        return self._checked(self._http.get("/healthz")).json()

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.status_code != 200:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise ScorerError(response.status_code, message)
        return response
