"""The official openai client's Responses API (`client.responses.create`, plain and streamed,
and `client.responses.stream`) gets through thrifty what it gets from the upstream directly,
and thrifty's replays parse exactly like the live answers they replay.

Run by tests/responses/sdk.rs with the environment:

    DIRECT_OPENAI_BASE   the fake upstream's OpenAI base URL (".../v1")
    PROXY_OPENAI_BASE    thrifty's OpenAI base URL (".../v1")

Each comparison case makes the same call once directly and once through thrifty and compares
what the client parsed (`model_dump()`), with only the fields the fake mints afresh masked:
ids (`resp_fake000001`, `msg_fake000002`, ...) and times (`created_at`, `completed_at`).
Then the replay cases call thrifty again and require a hit (`x-thrifty-cache: hit`) whose
parsed response equals the first proxied one, ids included.

Every request carries `x-responses-test-side` (direct or proxy), so the Rust test can count
what reached the upstream through thrifty. Prints `ok <case>` or `FAIL <case>: <reason>` per
case, then `N passed, M failed` as the last line; exits 1 if any failed.
"""

import os
import re
import sys
import time
import traceback

import openai

SIDE_HEADER = "x-responses-test-side"
MODEL = "gpt-4o-mini"
RUN = os.urandom(4).hex()
FAKE_ID = re.compile(r"^(resp|msg|fc|call|rs)_fake\d{6}$")
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def client(base, side):
    return openai.OpenAI(
        base_url=base,
        api_key="sk-test",
        timeout=30.0,
        max_retries=0,
        default_headers={SIDE_HEADER: side},
    )


def masked(value):
    if isinstance(value, dict):
        return {
            k: ("<time>" if k in ("created_at", "completed_at") and v is not None else masked(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, str) and FAKE_ID.match(value):
        return "<id>"
    return value


def plain(c, text, **extra):
    return c.responses.create(model=MODEL, input=f"{text} {RUN}", **extra)


def streamed(c, text, **extra):
    events = list(c.responses.create(model=MODEL, input=f"{text} {RUN}", stream=True, **extra))
    return events


def stream_summary(events):
    """The event types in order and the final response, as a client following the stream sees."""
    kinds = [e.type for e in events]
    numbers = [e.sequence_number for e in events]
    if numbers != list(range(len(events))):
        raise AssertionError(f"sequence numbers {numbers}")
    final = events[-1].response.model_dump()
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    return {"kinds": kinds, "final": final, "deltas": deltas}


def stream_helper(c, text):
    with c.responses.stream(model=MODEL, input=f"{text} {RUN}") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    return {"kinds": kinds, "final": final.model_dump(), "text": final.output_text}


def tool_call(c, text):
    response = c.responses.create(model=MODEL, input=f"{text} {RUN}", tools=[WEATHER_TOOL])
    call = response.output[0]
    if call.type != "function_call" or call.name != "get_weather":
        raise AssertionError(f"expected a get_weather call, got {call}")
    return response.model_dump()


def continued(c, text):
    first = plain(c, text)
    second = c.responses.create(
        model=MODEL, input="and then?", previous_response_id=first.id
    )
    if second.previous_response_id != first.id:
        raise AssertionError("the follow-up does not name the first response")
    return second.model_dump()


COMPARED = [
    ("create", lambda c: plain(c, "Say hello").model_dump()),
    ("create_stream", lambda c: stream_summary(streamed(c, "Tell a story"))),
    ("stream_helper", lambda c: stream_helper(c, "Stream helper")),
    ("tools", lambda c: tool_call(c, "What is the weather in Paris?")),
    ("previous_response_id", lambda c: continued(c, "My name is Ann")),
]


def raw_create(c, text, stream=False):
    """A create whose HTTP response is kept, to read thrifty's cache header."""
    raw = c.responses.with_raw_response.create(
        model=MODEL, input=f"{text} {RUN}", stream=stream
    )
    parsed = raw.parse()
    if stream:
        parsed = stream_summary(list(parsed))
    else:
        parsed = parsed.model_dump()
    return raw.headers.get("x-thrifty-cache"), parsed


def until_hit(c, text, stream=False):
    deadline = time.time() + 10
    while True:
        cache, parsed = raw_create(c, text, stream)
        if cache == "hit" or time.time() > deadline:
            return cache, parsed


def replay_json(proxy):
    cache, first = raw_create(proxy, "Replay me")
    assert cache == "miss", f"first call was {cache}"
    cache, again = until_hit(proxy, "Replay me")
    assert cache == "hit", f"second call was {cache}"
    assert again == first, "the hit parses like the live answer, id included"


def replay_stream(proxy):
    cache, first = raw_create(proxy, "Replay my stream", stream=True)
    assert cache == "miss", f"first call was {cache}"
    cache, again = until_hit(proxy, "Replay my stream", stream=True)
    assert cache == "hit", f"second call was {cache}"
    assert again == first, "the replayed stream parses like the live one"
    cache, as_json = until_hit(proxy, "Replay my stream")
    assert cache == "hit", f"the JSON call was {cache}"
    assert as_json == first["final"], "JSON from a recorded stream is its final response"


def replay_json_as_stream(proxy):
    cache, first = raw_create(proxy, "JSON then stream")
    assert cache == "miss", f"first call was {cache}"
    cache, replay = until_hit(proxy, "JSON then stream", stream=True)
    assert cache == "hit", f"the stream was {cache}"
    assert replay["final"] == first, "the stream's final response is the recorded one"
    text = "".join(
        part["text"] for item in first["output"] for part in item.get("content") or []
    )
    assert replay["deltas"] == text, f"deltas {replay['deltas']!r} != {text!r}"


REPLAYS = [
    ("replay_json", replay_json),
    ("replay_stream", replay_stream),
    ("replay_json_as_stream", replay_json_as_stream),
]


def main():
    try:
        direct = client(os.environ["DIRECT_OPENAI_BASE"], "direct")
        proxy = client(os.environ["PROXY_OPENAI_BASE"], "proxy")
    except KeyError as missing:
        print(f"missing environment variable {missing}", flush=True)
        return 2
    passed = failed = 0

    def report(name, problem):
        nonlocal passed, failed
        if problem:
            failed += 1
            print(f"FAIL {name}: {problem}", flush=True)
        else:
            passed += 1
            print(f"ok {name}", flush=True)

    for name, call in COMPARED:
        try:
            a, b = masked(call(direct)), masked(call(proxy))
            report(name, None if a == b else f"direct {a!r} != proxy {b!r}")
        except Exception as error:
            report(name, traceback.format_exception_only(type(error), error)[-1].strip())
    for name, case in REPLAYS:
        try:
            case(proxy)
            report(name, None)
        except Exception as error:
            report(name, traceback.format_exception_only(type(error), error)[-1].strip())
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
