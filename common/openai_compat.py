"""A small client for OpenAI-compatible chat-completions endpoints (a vLLM server, a hosted API), stdlib only.

Used by the action knowledge-base writer and by the video-description tool. The key is read from the environment
variable the config names (never from the config itself) and never appears in errors, logs or metrics.

    client = ChatClient("http://localhost:8000/v1", model="Qwen2.5-VL-7B-Instruct", api_key_env="VLLM_API_KEY")
    text = client.chat([{"role": "user", "content": "Define 'climb stairs'."}], max_tokens=200)
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request
from typing import Any


class EndpointError(RuntimeError):
    """The endpoint could not be reached or answered something that is not a chat completion."""


class ChatClient:
    def __init__(self, base_url: str, model: str, api_key_env: str = "", timeout_s: float = 60.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint base_url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout_s, self.api_key_env = model, timeout_s, api_key_env
        if api_key_env and not os.environ.get(api_key_env):
            raise ValueError(f"the endpoint key variable {api_key_env} is not set in the environment")

    def __repr__(self) -> str:  # no key in reprs that may end up in logs
        return f"ChatClient(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def chat(self, messages: list[dict[str, Any]], max_tokens: int = 256, temperature: float = 0.0) -> str:
        """The assistant text of one chat completion. Raises EndpointError (without the key) on any failure."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = "Bearer " + os.environ[self.api_key_env]
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                reply = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raise EndpointError(f"{self.url} answered HTTP {e.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise EndpointError(f"cannot reach {self.url}: {getattr(e, 'reason', e)}") from None
        except ValueError:
            raise EndpointError(f"{self.url} answered something that is not JSON") from None
        try:
            return str(reply["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.url} answered JSON without choices[0].message.content") from None


def image_part(image: Any) -> dict[str, Any]:
    """An RGB uint8 H x W x 3 array as an OpenAI `image_url` content part (a PNG data URL)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": url}}
