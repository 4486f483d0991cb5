"""The official `openai` and `ollama` clients must get through thrifty exactly what they get
from the upstream directly.

Run by tests/real_clients.rs with the environment:

    DIRECT_OPENAI_BASE   the fake upstream's OpenAI base URL (".../v1")
    PROXY_OPENAI_BASE    thrifty's OpenAI base URL (".../v1")
    DIRECT_OLLAMA_HOST   the fake upstream's Ollama host
    PROXY_OLLAMA_HOST    thrifty's Ollama host

Every case makes the same call once through each side and compares what the client library
parsed, field by field (`model_dump()` of the openai and ollama response objects).
Only the fields the fake mints afresh for every call are masked: OpenAI ids
(`chatcmpl-fake000001`, `call_fake000002`, ...), `created` (unix seconds) and Ollama's
`created_at`; each is checked to have the fake's shape before it is masked.

Every request carries `x-clients-test-side` (direct or proxy) and `x-clients-test-case` (the
case name), so the Rust test can check in the fake's records that each case reached the
upstream exactly once per side. Each case must see exactly one HTTP response per side, with the
same status and content type; a proxied one must carry thrifty's `x-thrifty-upstream` header
and a direct one must not.

Prints `ok <case>` or `FAIL <case>: <differences>` per case, then `N passed, M failed` as the
last line; exits 1 if any failed.
"""

import array
import base64
import json
import os
import re
import sys
import time
import traceback

import ollama
import openai

SIDE_HEADER = "x-clients-test-side"
CASE_HEADER = "x-clients-test-case"
THRIFTY_HEADER = "x-thrifty-upstream"
TIMEOUT = 30.0

CHAT_MODEL = "gpt-4o-mini"
COMPLETION_MODEL = "gpt-3.5-turbo-instruct"
EMBEDDING_MODEL = "text-embedding-3-small"
OLLAMA_MODEL = "llama3.2"
OLLAMA_EMBED_MODEL = "nomic-embed-text"

WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}
# Ollama's tool schema is the same shape.
WEATHER_TOOL_OLLAMA = WEATHER_TOOL_OPENAI
TOOL_ARGUMENTS = {"city": "Paris"}

# Every case sends text no other case (and no earlier run) sends, so that no cache in thrifty
# can answer a proxied call: each must reach the upstream, which the Rust test counts.
RUN = os.urandom(4).hex()


def unique(text):
    return f"{text} (run {RUN})"


# -------------------------------------------------------------------------------------------
# The two sides.
# -------------------------------------------------------------------------------------------


class Side:
    """One pair of clients (openai and ollama) pointed at the fake or at thrifty."""

    def __init__(self, name, openai_base, ollama_host):
        self.name = name
        self.case = ""
        self.responses = []
        hooks = {"request": [self._on_request], "response": [self._on_response]}
        self.openai = openai.OpenAI(
            base_url=openai_base,
            api_key="sk-clients-test",
            max_retries=0,
            timeout=TIMEOUT,
            http_client=openai.DefaultHttpxClient(event_hooks=hooks, timeout=TIMEOUT),
        )
        self.ollama = ollama.Client(host=ollama_host, timeout=TIMEOUT, event_hooks=hooks)

    def _on_request(self, request):
        request.headers[SIDE_HEADER] = self.name
        request.headers[CASE_HEADER] = self.case

    def _on_response(self, response):
        self.responses.append(
            {
                "request": f"{response.request.method} {response.request.url.path}",
                "status": response.status_code,
                "content_type": response.headers.get("content-type"),
                "thrifty": response.headers.get(THRIFTY_HEADER),
            }
        )

    def begin(self, case):
        self.case = case
        self.responses = []


# -------------------------------------------------------------------------------------------
# Masking and comparing.
# -------------------------------------------------------------------------------------------

FAKE_ID = re.compile(r"^(chatcmpl-|cmpl-|call_)fake\d{6}$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def mask_id(value):
    if isinstance(value, str) and FAKE_ID.match(value):
        return FAKE_ID.match(value).group(1) + "fake<n>"
    return value


def mask_created(value):
    if isinstance(value, int) and not isinstance(value, bool) and abs(value - time.time()) < 3600:
        return "<unix now>"
    return value


def mask_created_at(value):
    if isinstance(value, str) and RFC3339.match(value):
        return "<rfc3339>"
    return value


OPENAI_MASKS = {"id": mask_id, "created": mask_created}
OLLAMA_MASKS = {"created_at": mask_created_at}


def masked(value, masks):
    """`value` with every dict entry named in `masks` replaced by its masker's result."""
    if isinstance(value, dict):
        return {
            k: masks[k](v) if k in masks else masked(v, masks) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [masked(v, masks) for v in value]
    return value


def short(value):
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def differences(direct, proxy, path="$"):
    """Every place where `proxy` differs from `direct`, as readable lines."""
    if type(direct) is not type(proxy):
        return [f"{path}: direct {short(direct)} ({type(direct).__name__}) != proxy {short(proxy)} ({type(proxy).__name__})"]
    if isinstance(direct, dict):
        out = []
        for key in direct:
            if key not in proxy:
                out.append(f"{path}.{key}: missing through the proxy (direct {short(direct[key])})")
            else:
                out.extend(differences(direct[key], proxy[key], f"{path}.{key}"))
        for key in proxy:
            if key not in direct:
                out.append(f"{path}.{key}: only through the proxy ({short(proxy[key])})")
        return out
    if isinstance(direct, (list, tuple)):
        out = []
        if len(direct) != len(proxy):
            out.append(f"{path}: direct has {len(direct)} items, proxy has {len(proxy)}")
        for i, (d, p) in enumerate(zip(direct, proxy)):
            out.extend(differences(d, p, f"{path}[{i}]"))
        return out
    if direct != proxy:
        return [f"{path}: direct {short(direct)} != proxy {short(proxy)}"]
    return []


# -------------------------------------------------------------------------------------------
# Checks each side's result must pass on its own (they prove the fake really answered).
# -------------------------------------------------------------------------------------------


def expect(condition, message, problems):
    if not condition:
        problems.append(message)


def check_same_stream_id(chunks, problems):
    ids = {c.get("id") for c in chunks}
    created = {c.get("created") for c in chunks}
    expect(len(ids) == 1, f"stream chunks carry {len(ids)} different ids: {sorted(map(str, ids))}", problems)
    expect(len(created) == 1, f"stream chunks carry {len(created)} different `created`", problems)


def openai_stream_text(chunks):
    return "".join(
        (choice.get("delta") or {}).get("content") or "" for c in chunks for choice in c["choices"]
    )


def reassemble_tool_calls(chunks):
    """Joins streamed tool-call deltas the way a client must: by index, arguments appended."""
    calls = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for delta in (choice.get("delta") or {}).get("tool_calls") or []:
                call = calls.setdefault(
                    delta["index"], {"id": None, "type": None, "name": "", "arguments": ""}
                )
                if delta.get("id"):
                    call["id"] = delta["id"]
                if delta.get("type"):
                    call["type"] = delta["type"]
                function = delta.get("function") or {}
                call["name"] += function.get("name") or ""
                call["arguments"] += function.get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


def finish_reasons(chunks):
    return [choice["finish_reason"] for c in chunks for choice in c["choices"] if choice["finish_reason"]]


def decode_base64_embedding(text):
    return array.array("f", base64.b64decode(text)).tolist()


# -------------------------------------------------------------------------------------------
# Cases: each calls its side once and returns (comparable value, problems of its own).
# -------------------------------------------------------------------------------------------

QUESTION = unique("What is the capital of France?")


def openai_chat(side):
    result = side.openai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": QUESTION},
        ],
    )
    value = result.model_dump()
    problems = []
    expect(result.choices[0].message.content == f"Echo: {QUESTION}", f"content {result.choices[0].message.content!r}", problems)
    return value, problems


def openai_chat_stream(side):
    question = unique("Tell me a short story about a cat")
    stream = side.openai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": question}],
        stream=True,
    )
    chunks = [chunk.model_dump() for chunk in stream]
    problems = []
    check_same_stream_id(chunks, problems)
    text = openai_stream_text(chunks)
    expect(text == f"Echo: {question}", f"streamed text {text!r}", problems)
    expect(finish_reasons(chunks) == ["stop"], f"finish reasons {finish_reasons(chunks)}", problems)
    expect(all(c.get("usage") is None for c in chunks), "usage without include_usage", problems)
    return {"chunks": chunks, "text": text}, problems


def openai_chat_stream_usage(side):
    question = unique("Count to three")
    stream = side.openai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk.model_dump() for chunk in stream]
    problems = []
    check_same_stream_id(chunks, problems)
    text = openai_stream_text(chunks)
    expect(text == f"Echo: {question}", f"streamed text {text!r}", problems)
    last = chunks[-1] if chunks else {}
    usage = last.get("usage") or {}
    expect(last.get("choices") == [], "the usage chunk has choices", problems)
    # The fake counts words: the question's plus 3 per message, and the answer's.
    words = len(question.split())
    expect(usage.get("prompt_tokens") == words + 3 and usage.get("completion_tokens") == words + 1, f"usage {usage}", problems)
    expect(all(c.get("usage") is None for c in chunks[:-1]), "usage before the last chunk", problems)
    return {"chunks": chunks, "text": text}, problems


def openai_chat_tool(side):
    result = side.openai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": unique("weather in Paris?")}],
        tools=[WEATHER_TOOL_OPENAI],
    )
    value = result.model_dump()
    problems = []
    choice = result.choices[0]
    calls = choice.message.tool_calls or []
    expect(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}", problems)
    expect(len(calls) == 1, f"{len(calls)} tool calls", problems)
    if calls:
        expect(calls[0].function.name == "get_weather", f"tool name {calls[0].function.name!r}", problems)
        expect(json.loads(calls[0].function.arguments) == TOOL_ARGUMENTS, f"arguments {calls[0].function.arguments!r}", problems)
    return value, problems


def openai_chat_tool_stream(side):
    stream = side.openai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": unique("What is the weather like in Paris?")}],
        tools=[WEATHER_TOOL_OPENAI],
        stream=True,
    )
    chunks = [chunk.model_dump() for chunk in stream]
    problems = []
    check_same_stream_id(chunks, problems)
    calls = reassemble_tool_calls(chunks)
    expect(len(calls) == 1, f"{len(calls)} reassembled tool calls", problems)
    if calls:
        call = calls[0]
        expect(call["name"] == "get_weather", f"tool name {call['name']!r}", problems)
        expect(call["type"] == "function", f"tool type {call['type']!r}", problems)
        expect(bool(call["id"]), "tool call without id", problems)
        try:
            arguments = json.loads(call["arguments"])
        except ValueError:
            arguments = call["arguments"]
        expect(arguments == TOOL_ARGUMENTS, f"reassembled arguments {call['arguments']!r}", problems)
    expect(finish_reasons(chunks) == ["tool_calls"], f"finish reasons {finish_reasons(chunks)}", problems)
    return {"chunks": chunks, "tool_calls": calls}, problems


def openai_completion(side):
    prompt = unique("Say this is a test")
    result = side.openai.completions.create(model=COMPLETION_MODEL, prompt=prompt)
    problems = []
    expect(result.choices[0].text == f"Echo: {prompt}", f"text {result.choices[0].text!r}", problems)
    return result.model_dump(), problems


def openai_completion_stream(side):
    prompt = unique("Say this is a streamed test")
    stream = side.openai.completions.create(model=COMPLETION_MODEL, prompt=prompt, stream=True)
    chunks = [chunk.model_dump() for chunk in stream]
    problems = []
    check_same_stream_id(chunks, problems)
    text = "".join(choice["text"] for c in chunks for choice in c["choices"])
    expect(text == f"Echo: {prompt}", f"streamed text {text!r}", problems)
    return {"chunks": chunks, "text": text}, problems


def embed_inputs(case):
    return [unique(f"The food was delicious ({case})."), unique(f"A cat sat on the mat ({case}).")]


def check_vectors(vectors, problems, count=2):
    expect(len(vectors) == count and all(len(v) == 8 for v in vectors), f"vector shapes {[len(v) for v in vectors]}", problems)
    expect(all(isinstance(x, float) for v in vectors for x in v), "vectors hold non-floats", problems)
    norms = [sum(x * x for x in v) for v in vectors]
    expect(all(abs(n - 1.0) < 1e-4 for n in norms), f"vectors are not unit length: {norms}", problems)


def openai_embeddings_float(side):
    result = side.openai.embeddings.create(
        model=EMBEDDING_MODEL, input=embed_inputs("float"), encoding_format="float"
    )
    problems = []
    check_vectors([d.embedding for d in result.data], problems)
    return result.model_dump(), problems


def openai_embeddings_base64(side):
    result = side.openai.embeddings.create(
        model=EMBEDDING_MODEL, input=embed_inputs("base64"), encoding_format="base64"
    )
    problems = []
    raw = [d.embedding for d in result.data]
    if all(isinstance(e, str) for e in raw):
        check_vectors([decode_base64_embedding(e) for e in raw], problems)
    else:
        problems.append("an explicit base64 request came back decoded")
    # The SDK types `embedding` as floats; an explicit base64 request keeps the string.
    value = result.model_dump(warnings=False)
    return value, problems


def openai_embeddings_sdk_default(side):
    # Without encoding_format the SDK asks for base64 and decodes it to floats itself.
    result = side.openai.embeddings.create(model=EMBEDDING_MODEL, input=embed_inputs("sdk default"))
    problems = []
    check_vectors([d.embedding for d in result.data], problems)
    return result.model_dump(), problems


def openai_models_list(side):
    page = side.openai.models.list()
    problems = []
    ids = [m.id for m in page]
    expect("gpt-4o-mini" in ids, f"model ids {ids}", problems)
    return {"page": page.model_dump(), "models": [m.model_dump() for m in page]}, problems


def ollama_messages(question):
    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": question},
    ]


def ollama_chat(side):
    question = unique("Why is the sky blue?")
    result = side.ollama.chat(model=OLLAMA_MODEL, messages=ollama_messages(question), stream=False)
    problems = []
    expect(result.message.content == f"Echo: {question}", f"content {result.message.content!r}", problems)
    expect(result.done is True, "not done", problems)
    return result.model_dump(), problems


def ollama_chat_stream(side):
    question = unique("Why is the sea blue?")
    stream = side.ollama.chat(model=OLLAMA_MODEL, messages=ollama_messages(question), stream=True)
    parts = [part.model_dump() for part in stream]
    problems = []
    text = "".join(p["message"]["content"] or "" for p in parts)
    expect(text == f"Echo: {question}", f"streamed text {text!r}", problems)
    expect([p["done"] for p in parts][-1:] == [True], "the last part is not done", problems)
    expect(not any(p["done"] for p in parts[:-1]), "done before the last part", problems)
    return {"parts": parts, "text": text}, problems


def ollama_generate(side):
    prompt = unique("Why is grass green?")
    result = side.ollama.generate(model=OLLAMA_MODEL, prompt=prompt, stream=False)
    problems = []
    expect(result.response == f"Echo: {prompt}", f"response {result.response!r}", problems)
    return result.model_dump(), problems


def ollama_generate_stream(side):
    prompt = unique("Why is snow white?")
    stream = side.ollama.generate(model=OLLAMA_MODEL, prompt=prompt, stream=True)
    parts = [part.model_dump() for part in stream]
    problems = []
    text = "".join(p["response"] or "" for p in parts)
    expect(text == f"Echo: {prompt}", f"streamed text {text!r}", problems)
    expect([p["done"] for p in parts][-1:] == [True], "the last part is not done", problems)
    return {"parts": parts, "text": text}, problems


def ollama_embed(side):
    result = side.ollama.embed(model=OLLAMA_EMBED_MODEL, input=embed_inputs("ollama embed"))
    problems = []
    check_vectors(result.embeddings, problems)
    return result.model_dump(), problems


def ollama_embeddings_legacy(side):
    result = side.ollama.embeddings(model=OLLAMA_EMBED_MODEL, prompt=unique("A legacy embedding"))
    problems = []
    check_vectors([result.embedding], problems, count=1)
    return result.model_dump(), problems


def ollama_list(side):
    result = side.ollama.list()
    problems = []
    names = [m.model for m in result.models]
    expect("llama3.2:latest" in names, f"models {names}", problems)
    return result.model_dump(), problems


def ollama_chat_tool(side):
    result = side.ollama.chat(
        model=OLLAMA_MODEL,
        messages=[{"role": "user", "content": unique("Is the weather nice in Paris?")}],
        tools=[WEATHER_TOOL_OLLAMA],
        stream=False,
    )
    problems = []
    calls = result.message.tool_calls or []
    expect(len(calls) == 1, f"{len(calls)} tool calls", problems)
    if calls:
        expect(calls[0].function.name == "get_weather", f"tool name {calls[0].function.name!r}", problems)
        expect(dict(calls[0].function.arguments) == TOOL_ARGUMENTS, f"arguments {calls[0].function.arguments!r}", problems)
    return result.model_dump(), problems


def ollama_chat_tool_stream(side):
    parts = [
        part.model_dump()
        for part in side.ollama.chat(
            model=OLLAMA_MODEL,
            messages=[{"role": "user", "content": unique("Paris weather today?")}],
            tools=[WEATHER_TOOL_OLLAMA],
            stream=True,
        )
    ]
    problems = []
    calls = [c for p in parts for c in (p["message"].get("tool_calls") or [])]
    expect(len(calls) == 1, f"{len(calls)} tool calls", problems)
    if calls:
        expect(calls[0]["function"]["name"] == "get_weather", f"tool name {calls[0]['function']['name']!r}", problems)
        expect(dict(calls[0]["function"]["arguments"]) == TOOL_ARGUMENTS, "wrong arguments", problems)
    return {"parts": parts}, problems


CASES = [
    ("openai_chat", openai_chat, OPENAI_MASKS),
    ("openai_chat_stream", openai_chat_stream, OPENAI_MASKS),
    ("openai_chat_stream_include_usage", openai_chat_stream_usage, OPENAI_MASKS),
    ("openai_chat_tool_call", openai_chat_tool, OPENAI_MASKS),
    ("openai_chat_tool_call_stream", openai_chat_tool_stream, OPENAI_MASKS),
    ("openai_completion", openai_completion, OPENAI_MASKS),
    ("openai_completion_stream", openai_completion_stream, OPENAI_MASKS),
    ("openai_embeddings_float", openai_embeddings_float, {}),
    ("openai_embeddings_base64", openai_embeddings_base64, {}),
    ("openai_embeddings_sdk_default", openai_embeddings_sdk_default, {}),
    ("openai_models_list", openai_models_list, {}),
    ("ollama_chat", ollama_chat, OLLAMA_MASKS),
    ("ollama_chat_stream", ollama_chat_stream, OLLAMA_MASKS),
    ("ollama_generate", ollama_generate, OLLAMA_MASKS),
    ("ollama_generate_stream", ollama_generate_stream, OLLAMA_MASKS),
    ("ollama_embed", ollama_embed, {}),
    ("ollama_embeddings_legacy", ollama_embeddings_legacy, {}),
    ("ollama_list", ollama_list, {}),
    ("ollama_chat_tool_call", ollama_chat_tool, OLLAMA_MASKS),
    ("ollama_chat_tool_call_stream", ollama_chat_tool_stream, OLLAMA_MASKS),
]


# -------------------------------------------------------------------------------------------
# Running.
# -------------------------------------------------------------------------------------------


def exchange_problems(side):
    """What is wrong with the HTTP exchanges one side made for a case."""
    problems = []
    if len(side.responses) != 1:
        problems.append(f"{len(side.responses)} HTTP responses instead of 1: {side.responses}")
    for response in side.responses:
        proxied = response["thrifty"] is not None
        if side.name == "proxy" and not proxied:
            problems.append(f"{response['request']} answered without {THRIFTY_HEADER}: it did not go through thrifty")
        if side.name == "direct" and proxied:
            problems.append(f"{response['request']} answered with {THRIFTY_HEADER}: the direct side went through thrifty")
    return problems


def run_case(name, call, masks, sides):
    """Runs one case on both sides; returns the list of failure messages (empty when ok)."""
    values = {}
    exchanges = {}
    failures = []
    for side in sides:
        side.begin(name)
        try:
            value, problems = call(side)
        except Exception as error:  # the client raised: that is the case's result
            detail = traceback.format_exception_only(type(error), error)[-1].strip()
            failures.append(f"{side.name} raised {detail}")
            continue
        finally:
            side.case = ""
        failures.extend(f"{side.name}: {p}" for p in problems + exchange_problems(side))
        values[side.name] = masked(value, masks)
        exchanges[side.name] = [
            {k: r[k] for k in ("request", "status", "content_type")} for r in side.responses
        ]
    if len(values) == 2:
        failures.extend(differences(values["direct"], values["proxy"]))
        failures.extend(
            f"HTTP {line}" for line in differences(exchanges["direct"], exchanges["proxy"])
        )
    return failures


def main():
    try:
        direct = Side("direct", os.environ["DIRECT_OPENAI_BASE"], os.environ["DIRECT_OLLAMA_HOST"])
        proxy = Side("proxy", os.environ["PROXY_OPENAI_BASE"], os.environ["PROXY_OLLAMA_HOST"])
    except KeyError as missing:
        print(f"missing environment variable {missing}", flush=True)
        return 2
    passed = failed = 0
    for name, call, masks in CASES:
        failures = run_case(name, call, masks, [direct, proxy])
        if failures:
            failed += 1
            shown = "; ".join(failures[:6])
            more = f" (and {len(failures) - 6} more)" if len(failures) > 6 else ""
            print(f"FAIL {name}: {shown}{more}", flush=True)
        else:
            passed += 1
            print(f"ok {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
