"""One vLLM OpenAI server's HTTP calls."""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from app.engine.requests import TokenLogprob
from app.engine.sampling import SamplingParams
from app.engine.structured import OutputConstraint

TOKEN_PREFIX = "token_id:"  # vLLM's token names with return_tokens_as_token_ids


class ServerDown(Exception):
    """The server did not answer (refused, reset, timed out) or answered 5xx."""


class AdapterMissing(Exception):
    """The server does not know the adapter name (never loaded, or it restarted)."""


class ServerRefused(Exception):
    """A 4xx from the server other than an unknown adapter."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def completion_body(
    model: str, prompt_ids: list[int], params: SamplingParams, stop_ids: list[int]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt_ids,
        "max_tokens": params.max_tokens,
        "temperature": 0.0 if params.greedy else params.temperature,
        "top_p": params.top_p,
        "stream": True,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "stop_token_ids": stop_ids,
        "skip_special_tokens": True,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    if params.logprobs is not None:
        body["logprobs"] = params.logprobs
    if params.presence_penalty:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        body["frequency_penalty"] = params.frequency_penalty
    if params.logit_bias:
        body["logit_bias"] = {str(t): b for t, b in params.logit_bias}
    if params.constraint is not None:
        body["structured_outputs"] = structured_outputs(params.constraint)
    return body


def structured_outputs(constraint: OutputConstraint) -> dict[str, Any]:
    """vLLM's request field for a constraint (its xgrammar backend compiles the same spec)."""
    if constraint.kind == "json":
        return {"json": json.loads(constraint.spec)}
    if constraint.kind == "choice":
        return {"choice": constraint.choices}
    return {"regex": constraint.spec}


def scoring_body(model: str, prompt_ids: list[int], token: int) -> dict[str, Any]:
    """A one-step request that can only pick `token` after `prompt_ids` and reports its
    log-probability under the model (vLLM's logprobs are taken before allowed_token_ids and
    any other processing: the model's own distribution, as the built-in engine reports).
    Not prompt_logprobs: with LoRA enabled, vLLM 0.32's CPU build kills its engine on them."""
    return {
        "model": model,
        "prompt": prompt_ids,
        "max_tokens": 1,
        "temperature": 0.0,
        "allowed_token_ids": [token],
        "logprobs": 0,
        "stream": False,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "skip_special_tokens": False,
    }


def scored_logprob(response: dict[str, Any], token: int) -> TokenLogprob:
    """The forced token's entry from a scoring_body response."""
    choices = response.get("choices") or []
    if not choices:
        raise ServerDown("a scoring response without choices")
    ids = choices[0].get("token_ids") or []
    values = (choices[0].get("logprobs") or {}).get("token_logprobs") or []
    if ids[:1] != [token] or not values or values[0] is None:
        raise ServerDown(f"a scoring response for token {token} gave {ids[:1]}")
    return TokenLogprob(token, float(values[0]))


def _token_id(name: str) -> int:
    return int(name.removeprefix(TOKEN_PREFIX))


def token_logprobs(
    logprobs: dict[str, Any] | None, token_ids: list[int], top: int | None
) -> list[TokenLogprob | None]:
    """One chunk's legacy-shaped logprobs -> one entry per token (None where not asked)."""
    if not logprobs or top is None:
        return [None] * len(token_ids)
    entries: list[TokenLogprob | None] = []
    tops = logprobs.get("top_logprobs") or []
    values = logprobs.get("token_logprobs") or []
    for i, token in enumerate(token_ids):
        alternatives = sorted(
            ((_token_id(k), float(v)) for k, v in (tops[i] if i < len(tops) else {}).items()),
            key=lambda kv: -kv[1],
        )[:top]
        value = values[i] if i < len(values) and values[i] is not None else float("-inf")
        entries.append(TokenLogprob(token, float(value), tuple(alternatives)))
    return entries


class ServerClient:
    def __init__(self, url: str, http: httpx.AsyncClient, api_key: str | None = None) -> None:
        self.url = url
        self.http = http
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def healthy(self, timeout: float = 2.0) -> bool:
        try:
            r = await self.http.get(f"{self.url}/health", timeout=timeout)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def stream_completion(
        self, body: dict[str, Any]
    ) -> AsyncIterator[tuple[list[int], dict | None, str | None]]:
        """Yields (token ids, logprobs, finish reason) per streamed chunk."""
        try:
            async with self.http.stream(
                "POST", f"{self.url}/v1/completions", json=body, headers=self.headers
            ) as r:
                if r.status_code != 200:
                    await r.aread()
                    self._raise_for(r, body["model"])
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :]
                    if data.strip() == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk and not chunk.get("choices"):
                        raise ServerDown(str(chunk["error"]))
                    for choice in chunk.get("choices") or []:
                        yield (
                            list(choice.get("token_ids") or []),
                            choice.get("logprobs"),
                            choice.get("finish_reason"),
                        )
        except httpx.HTTPError as exc:  # refused, reset, read timeout, half a stream
            raise ServerDown(f"{type(exc).__name__}: {exc}") from exc
        raise ServerDown("the stream ended without [DONE]")

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One completion without streaming (scoring requests)."""
        try:
            r = await self.http.post(f"{self.url}/v1/completions", json=body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise ServerDown(f"{type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            self._raise_for(r, body["model"])
        try:
            return r.json()
        except ValueError as exc:
            raise ServerDown(f"not JSON: {r.text[:200]}") from exc

    def _raise_for(self, r: httpx.Response, model: str) -> None:
        if r.status_code >= 500:
            raise ServerDown(f"HTTP {r.status_code}: {r.text[:200]}")
        try:
            message = str(r.json().get("error", {}).get("message") or r.text)
        except ValueError:
            message = r.text
        if r.status_code == 404 and model in message:
            raise AdapterMissing(message)
        raise ServerRefused(r.status_code, message)

    async def load_adapter(self, name: str, path: str) -> None:
        try:
            r = await self.http.post(
                f"{self.url}/v1/load_lora_adapter",
                json={"lora_name": name, "lora_path": path},
                headers=self.headers,
            )
        except httpx.HTTPError as exc:
            raise ServerDown(f"{type(exc).__name__}: {exc}") from exc
        if r.status_code == 200 or "already been loaded" in r.text:
            return
        if r.status_code >= 500:
            raise ServerDown(f"HTTP {r.status_code}: {r.text[:200]}")
        raise ServerRefused(r.status_code, r.text[:500])

    async def unload_adapter(self, name: str) -> None:
        try:
            await self.http.post(
                f"{self.url}/v1/unload_lora_adapter",
                json={"lora_name": name},
                headers=self.headers,
            )
        except httpx.HTTPError as exc:
            raise ServerDown(f"{type(exc).__name__}: {exc}") from exc
