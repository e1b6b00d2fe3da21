"""Errors of the /v1 data plane, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations


class GatewayError(Exception):
    """A request the gateway refuses or cannot serve; ``status`` is the HTTP status OpenAI would answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"GatewayError({self.status}, {self.code!r}, {self.message!r})"


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def invalid_api_key(message: str = "Incorrect API key provided.") -> GatewayError:
    return GatewayError(401, message, code="invalid_api_key")


def model_not_found(model_id: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model_id}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


API_NAMES = {
    "chat.completions": "Chat Completions API (/v1/chat/completions)",
    "completions": "Completions API (/v1/completions)",
    "embeddings": "Embeddings API (/v1/embeddings)",
}


def model_not_supported(model_id: str, *, kind: str, endpoint: str) -> GatewayError:
    """The model exists but answers another endpoint (a chat model asked for embeddings, or the reverse).

    OpenAI answers such a call with an ``invalid_request_error`` naming the model and the endpoint to use, vLLM with
    a 400 "The model does not support <name> API"; this says both, with the code ``model_not_supported``."""
    use = "/v1/embeddings" if kind == "embedding" else "/v1/chat/completions"
    return GatewayError(
        400,
        f"The model `{model_id}` is {'an embedding' if kind == 'embedding' else 'a chat'} model and does not support "
        f"the {API_NAMES[endpoint]}; call {use} with it.",
        param="model",
        code="model_not_supported",
    )


def max_tokens_too_large(model_id: str, *, param: str, requested: int, context_length: int) -> GatewayError:
    """``max_tokens`` that no prompt leaves room for (the prompt has at least one token), refused before anything is
    reserved: vLLM's words ("... is too large: N. This model's maximum context length is M tokens"), OpenAI's
    ``invalid_value`` code for a parameter out of its range, as this gateway's other range checks answer."""
    return GatewayError(
        400,
        f"'{param}' is too large: {requested}. The model `{model_id}`'s maximum context length is {context_length} "
        f"tokens, shared by the prompt and the completion; lower '{param}' to at most {context_length - 1} minus "
        "the prompt's tokens.",
        param=param,
        code="invalid_value",
    )


def model_not_allowed(model_id: str) -> GatewayError:
    return GatewayError(
        403,
        f"This API key is not allowed to use the model `{model_id}`.",
        type="permission_error",
        param="model",
        code="model_not_allowed",
    )


def insufficient_quota(
    message: str = "You exceeded your current quota, please check your plan and billing details.",
) -> GatewayError:
    return GatewayError(429, message, type="insufficient_quota", code="insufficient_quota")


def rate_limited(message: str, *, kind: str, retry_after: int, headers: dict | None = None) -> GatewayError:
    return GatewayError(429, message, type=kind, code="rate_limit_exceeded", retry_after=retry_after, headers=headers)


def no_ready_replica(model_id: str, retry_after: int = 5) -> GatewayError:
    return GatewayError(
        503,
        f"The model `{model_id}` has no ready replica right now; retry shortly.",
        type="server_error",
        code="no_ready_replica",
        retry_after=retry_after,
    )


def upstream_failed(model_id: str, retry_after: int = 2) -> GatewayError:
    return GatewayError(
        502,
        f"The model `{model_id}` failed to answer; retry shortly.",
        type="server_error",
        code="upstream_error",
        retry_after=retry_after,
    )


def stream_interrupted(model_id: str, code: str) -> GatewayError:
    """A stream's last event when its replica stopped answering mid-stream (the status line said 200 already)."""
    return GatewayError(
        502,
        f"The model `{model_id}` stopped answering mid-stream; the response is incomplete.",
        type="server_error",
        code=code or "upstream_error",
    )


WAKE_RETRY_AFTER = 10  # seconds: a service still waking after its longest wait is usually up within a few more


def wake_timed_out(model_id: str, waited_s: int) -> GatewayError:
    """A request held while its service woke from zero instances, answered when no instance was ready in time."""
    return GatewayError(
        503,
        f"The model `{model_id}` is starting (it had scaled to zero) and no instance was ready within {waited_s} s; "
        "nothing was charged. Retry shortly.",
        type="server_error",
        code="service_unavailable",
        retry_after=WAKE_RETRY_AFTER,
    )
