"""``backend: vllm``: the same judge requests through vLLM's offline engine, in this process, on a GPU.

Each request body (chat ``messages`` or a completions ``prompt``, ``temperature``, ``seed``, ``max_tokens``,
``top_logprobs``, ``response_format``) becomes ``SamplingParams`` (a JSON schema becomes guided /
structured decoding), and each result is returned in the OpenAI response layout (``choices[0].message``,
``logprobs.content[].top_logprobs``, ``usage``), so parsing, caching and usage are shared with the HTTP
path. UNTESTED in siftkit's CI (no vLLM, no GPU there); needs ``pip install vllm``.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, MissingDependencyError

_ENGINES: dict[tuple, Any] = {}


class VLLMBackend:
    def __init__(self, model: str, *, dtype: str = "auto", max_length: int = 4096, trust_remote_code: bool = False):
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise MissingDependencyError("vllm", None, "the vLLM judge backend") from None
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("backend='vllm' needs a CUDA GPU; use an endpoint (e.g. `vllm serve`) instead")
        key = (model, dtype, max_length, trust_remote_code)
        if key not in _ENGINES:
            from vllm import LLM

            _ENGINES[key] = LLM(model=model, dtype=dtype, max_model_len=max_length,
                                trust_remote_code=trust_remote_code)
        self.llm = _ENGINES[key]

    def _params(self, body: dict[str, Any]) -> Any:
        from vllm import SamplingParams

        kw: dict[str, Any] = {"temperature": float(body.get("temperature", 0.0)),
                              "max_tokens": int(body.get("max_tokens", 256))}
        if body.get("seed") is not None:
            kw["seed"] = int(body["seed"])
        if body.get("top_logprobs"):
            kw["logprobs"] = int(body["top_logprobs"])
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_schema":
            sch = rf["json_schema"]["schema"]
            try:                                   # vLLM >= 0.10
                from vllm.sampling_params import StructuredOutputsParams

                kw["structured_outputs"] = StructuredOutputsParams(json=sch)
            except ImportError:
                from vllm.sampling_params import GuidedDecodingParams

                kw["guided_decoding"] = GuidedDecodingParams(json=sch)
        return SamplingParams(**kw)

    def complete(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        params = [self._params(b) for b in bodies]
        if "messages" in bodies[0]:
            outs = self.llm.chat([b["messages"] for b in bodies], params, use_tqdm=False)
        else:
            outs = self.llm.generate([b["prompt"] for b in bodies], params, use_tqdm=False)
        return [self._as_openai(o, "messages" in b) for o, b in zip(outs, bodies)]

    def _as_openai(self, out: Any, chat: bool) -> dict[str, Any]:
        c = out.outputs[0]
        content = []
        for tid, lp in zip(c.token_ids, c.logprobs or []):
            top = sorted(lp.values(), key=lambda x: x.rank or 0)
            chosen = lp.get(tid)
            content.append({"token": chosen.decoded_token if chosen else "",
                            "logprob": chosen.logprob if chosen else None,
                            "top_logprobs": [{"token": x.decoded_token, "logprob": x.logprob} for x in top]})
        choice: dict[str, Any] = {"index": 0, "finish_reason": c.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": c.text}
        else:
            choice["text"] = c.text
        if c.logprobs:
            choice["logprobs"] = {"content": content}
        return {"choices": [choice], "usage": {"prompt_tokens": len(out.prompt_token_ids or []),
                                               "completion_tokens": len(c.token_ids)}}
