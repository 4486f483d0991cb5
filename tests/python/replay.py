"""A replayed answer must parse with the official `openai` and `ollama` clients exactly like the
live answer it was recorded from.

Run by tests/cache/sdk.rs with the environment:

    THRIFTY_URL   thrifty's root URL (the OpenAI base is THRIFTY_URL + "/v1")
    RUN           a tag that makes every question of this run unique

Each case makes the same call twice through thrifty: the first must be a cache miss (the live
answer from the fake upstream), the second a hit (the replay). What the client parsed
(`model_dump()`) must be equal on both, except for the fields a replay mints afresh: the top-level
`id` and `created` of OpenAI objects and chunks, and Ollama's `created_at`; those are checked to
be fresh instead. Cross-mode cases fill the cache in one mode and compare a replay in the other
mode with a live answer fetched with `x-thrifty-cache: off`.

Prints `ok <case>` or `FAIL <case>: <problems>` per case, then `upstream calls <n>` (how many
calls should have reached the upstream) and `N passed, M failed` as the last line; exits 1 if
any case failed.
"""

import os
import sys
import time
import traceback

import ollama
import openai

BASE = os.environ["THRIFTY_URL"]
RUN = os.environ.get("RUN") or os.urandom(4).hex()
TIMEOUT = 30.0
OFF = {"x-thrifty-cache": "off"}

CHAT_MODEL = "gpt-4o-mini"
COMPLETION_MODEL = "gpt-3.5-turbo-instruct"
OLLAMA_MODEL = "llama3.2"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def unique(text):
    return f"{text} (run {RUN})"


class Outcomes:
    """The `x-thrifty-cache` header of every HTTP response, in order."""

    def __init__(self):
        self.seen = []

    def hook(self, response):
        self.seen.append(response.headers.get("x-thrifty-cache"))

    def take(self):
        seen, self.seen = self.seen, []
        return seen


OUTCOMES = Outcomes()
HOOKS = {"response": [OUTCOMES.hook]}
OPENAI = openai.OpenAI(
    base_url=f"{BASE}/v1",
    api_key="sk-replay-test",
    max_retries=0,
    timeout=TIMEOUT,
    http_client=openai.DefaultHttpxClient(event_hooks=HOOKS, timeout=TIMEOUT),
)
OLLAMA = ollama.Client(host=BASE, timeout=TIMEOUT, event_hooks=HOOKS)
OLLAMA_OFF = ollama.Client(host=BASE, timeout=TIMEOUT, event_hooks=HOOKS, headers=OFF)
OPENAI_VOLATILE = ("id", "created")
OLLAMA_VOLATILE = ("created_at",)


def dump(obj):
    return obj.model_dump(mode="json")


def dumps(stream):
    return [dump(chunk) for chunk in stream]


def differences(live, replay, path="$"):
    """Every place where `replay` differs from `live`, as readable lines."""
    if type(live) is not type(replay):
        return [f"{path}: live {live!r} != replay {replay!r}"]
    if isinstance(live, dict):
        out = []
        for key in sorted(set(live) | set(replay)):
            if key not in replay:
                out.append(f"{path}.{key}: missing in the replay (live {live[key]!r})")
            elif key not in live:
                out.append(f"{path}.{key}: only in the replay ({replay[key]!r})")
            else:
                out.extend(differences(live[key], replay[key], f"{path}.{key}"))
        return out
    if isinstance(live, list):
        out = []
        if len(live) != len(replay):
            out.append(f"{path}: live has {len(live)} items, the replay {len(replay)}")
        for i, (a, b) in enumerate(zip(live, replay)):
            out.extend(differences(a, b, f"{path}[{i}]"))
        return out
    return [] if live == replay else [f"{path}: live {live!r} != replay {replay!r}"]


def split(value, volatile):
    """`value` without its volatile top-level fields, and those fields."""
    stable = {k: v for k, v in value.items() if k not in volatile}
    return stable, {k: value.get(k) for k in volatile}


def check_fresh(live, replay, volatile, problems):
    """The replay minted its own id and time, the same for all of its chunks."""
    replayed = [split(r, volatile)[1] for r in replay]
    recorded = [split(r, volatile)[1] for r in live]
    for key in volatile:
        values = {repr(v[key]) for v in replayed}
        if len(values) != 1:
            problems.append(f"the replay's chunks have different {key}: {values}")
        new, old = replayed[0][key], recorded[0][key]
        if key == "created":
            if not isinstance(new, int) or abs(new - time.time()) > 30:
                problems.append(f"replayed created {new!r} is not now")
        elif new == old or not new:
            problems.append(f"replayed {key} {new!r} is not fresh (recorded {old!r})")
        if key == "id" and isinstance(new, str) and isinstance(old, str):
            if new.split("-")[0] != old.split("-")[0]:
                problems.append(f"replayed id {new!r} lost the prefix of {old!r}")


def compare(live, replay, volatile, problems):
    if len(live) != len(replay):
        problems.append(f"live has {len(live)} objects, the replay {len(replay)}")
    for i, (a, b) in enumerate(zip(live, replay)):
        problems.extend(
            f"[{i}] {line}"
            for line in differences(split(a, volatile)[0], split(b, volatile)[0])
        )
    if live and replay:
        check_fresh(live, replay, volatile, problems)


UPSTREAM_CALLS = 0


def miss_then_hit(call, volatile, problems, check=None):
    """Calls twice; the first must be a miss and the second a hit that parses the same."""
    global UPSTREAM_CALLS
    OUTCOMES.take()
    live = call()
    first = OUTCOMES.take()
    replay = call()
    second = OUTCOMES.take()
    UPSTREAM_CALLS += 1
    if first != ["miss"]:
        problems.append(f"the first call was {first}, not one miss")
    if second != ["hit"]:
        problems.append(f"the second call was {second}, not one hit")
    compare(live, replay, volatile, problems)
    if check:
        for name, parsed in (("live", live), ("replay", replay)):
            problems.extend(f"{name}: {p}" for p in check(parsed))


def replayed_in_other_mode(fill, replay_call, live_call, volatile, problems, project=None):
    """Fills with `fill`, then compares a replay with a live answer fetched with the cache off."""
    global UPSTREAM_CALLS
    OUTCOMES.take()
    fill()
    filled = OUTCOMES.take()
    replay = replay_call()
    replayed = OUTCOMES.take()
    live = live_call()
    lived = OUTCOMES.take()
    UPSTREAM_CALLS += 2
    if filled != ["miss"]:
        problems.append(f"the filling call was {filled}, not one miss")
    if replayed != ["hit"]:
        problems.append(f"the replay was {replayed}, not one hit")
    if lived != ["off"]:
        problems.append(f"the live call was {lived}, not one off")
    if project:
        problems.extend(differences(project(live), project(replay)))
    else:
        compare(live, replay, volatile, problems)


# -------------------------------------------------------------------------------------------
# OpenAI.
# -------------------------------------------------------------------------------------------


def chat_messages(text):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": unique(text)}]


def tool_arguments(chunks):
    """The joined arguments of the first tool call of a chat completion stream."""
    out = ""
    for chunk in chunks:
        for choice in chunk["choices"]:
            for call in (choice["delta"] or {}).get("tool_calls") or []:
                out += (call.get("function") or {}).get("arguments") or ""
    return out


def stream_summary(chunks):
    """What a streamed chat completion adds up to, whatever its chunk boundaries."""
    content, role, finish, usage = "", None, None, None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"] or {}
            content += delta.get("content") or ""
            role = delta.get("role") or role
            finish = choice.get("finish_reason") or finish
    return {"content": content, "role": role, "finish_reason": finish, "usage": usage}


def case_openai_chat(problems):
    miss_then_hit(
        lambda: [dump(OPENAI.chat.completions.create(model=CHAT_MODEL, messages=chat_messages("hi")))],
        OPENAI_VOLATILE,
        problems,
        lambda parsed: [] if parsed[0]["usage"] else ["no usage"],
    )


def case_openai_chat_stream(problems):
    def call():
        return dumps(
            OPENAI.chat.completions.create(
                model=CHAT_MODEL, messages=chat_messages("stream"), stream=True
            )
        )

    def check(chunks):
        return [] if all(c["usage"] is None for c in chunks) else ["usage nobody asked for"]

    miss_then_hit(call, OPENAI_VOLATILE, problems, check)


def case_openai_chat_stream_usage(problems):
    def call():
        return dumps(
            OPENAI.chat.completions.create(
                model=CHAT_MODEL,
                messages=chat_messages("stream with usage"),
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    def check(chunks):
        last = chunks[-1]
        ok = last["choices"] == [] and last["usage"] and last["usage"]["total_tokens"] > 0
        return [] if ok else [f"no usage chunk at the end: {last}"]

    miss_then_hit(call, OPENAI_VOLATILE, problems, check)


def case_openai_tool_stream(problems):
    def call():
        return dumps(
            OPENAI.chat.completions.create(
                model=CHAT_MODEL,
                messages=chat_messages("What is the weather in Paris?"),
                tools=[WEATHER_TOOL],
                stream=True,
            )
        )

    def check(chunks):
        arguments = tool_arguments(chunks)
        return [] if arguments == '{"city":"Paris"}' else [f"tool arguments {arguments!r}"]

    miss_then_hit(call, OPENAI_VOLATILE, problems, check)


def case_openai_tool(problems):
    def call():
        return [
            dump(
                OPENAI.chat.completions.create(
                    model=CHAT_MODEL,
                    messages=chat_messages("And the weather in Rome?"),
                    tools=[WEATHER_TOOL],
                )
            )
        ]

    def check(parsed):
        calls = parsed[0]["choices"][0]["message"]["tool_calls"] or []
        ok = len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
        return [] if ok else [f"tool calls {calls!r}"]

    miss_then_hit(call, OPENAI_VOLATILE, problems, check)


def case_openai_completion(problems):
    miss_then_hit(
        lambda: [dump(OPENAI.completions.create(model=COMPLETION_MODEL, prompt=unique("complete")))],
        OPENAI_VOLATILE,
        problems,
    )


def case_openai_completion_stream(problems):
    miss_then_hit(
        lambda: dumps(
            OPENAI.completions.create(
                model=COMPLETION_MODEL, prompt=unique("complete a stream"), stream=True
            )
        ),
        OPENAI_VOLATILE,
        problems,
    )


def case_openai_json_entry_for_a_stream(problems):
    messages = chat_messages("json first, then a stream")

    def stream(**extra):
        return dumps(
            OPENAI.chat.completions.create(
                model=CHAT_MODEL,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **extra,
            )
        )

    replayed_in_other_mode(
        lambda: OPENAI.chat.completions.create(model=CHAT_MODEL, messages=messages),
        stream,
        lambda: stream(extra_headers=OFF),
        OPENAI_VOLATILE,
        problems,
        project=stream_summary,
    )


def case_openai_stream_entry_for_json(problems):
    messages = chat_messages("a stream first, then json")

    def json_call(**extra):
        return [dump(OPENAI.chat.completions.create(model=CHAT_MODEL, messages=messages, **extra))]

    replayed_in_other_mode(
        lambda: dumps(
            OPENAI.chat.completions.create(
                model=CHAT_MODEL,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
        ),
        json_call,
        lambda: json_call(extra_headers=OFF),
        OPENAI_VOLATILE,
        problems,
    )


def case_openai_tool_json_entry_for_the_stream_helper(problems):
    """A tool call recorded as JSON, replayed to the SDK's stream helper, builds the message the
    helper builds from a live stream (`content` None, not ""), with the arguments arriving in
    several deltas as a model streams them."""
    messages = chat_messages("What is the weather in Lyon?")
    replayed_fragments = []

    def helper(**extra):
        with OPENAI.chat.completions.stream(
            model=CHAT_MODEL, messages=messages, tools=[WEATHER_TOOL], **extra
        ) as stream:
            fragments = [
                event.arguments_delta
                for event in stream
                if event.type == "tool_calls.function.arguments.delta"
            ]
            final = dump(stream.get_final_completion())
        if not extra:
            replayed_fragments.extend(fragments)
        return final["choices"][0]["message"]

    replayed_in_other_mode(
        lambda: OPENAI.chat.completions.create(
            model=CHAT_MODEL, messages=messages, tools=[WEATHER_TOOL]
        ),
        helper,
        lambda: helper(extra_headers=OFF),
        OPENAI_VOLATILE,
        problems,
        # Each upstream call names its tool call afresh.
        project=lambda message: {
            **message,
            "tool_calls": [{**c, "id": None} for c in message.get("tool_calls") or []],
        },
    )
    pieces = [f for f in replayed_fragments if f]
    if len(pieces) < 2 or "".join(pieces) != '{"city":"Paris"}':
        problems.append(f"the replayed arguments arrived as {replayed_fragments!r}")


# -------------------------------------------------------------------------------------------
# Ollama.
# -------------------------------------------------------------------------------------------


def case_ollama_chat(problems):
    miss_then_hit(
        lambda: [dump(OLLAMA.chat(model=OLLAMA_MODEL, messages=chat_messages("hi"), stream=False))],
        OLLAMA_VOLATILE,
        problems,
    )


def case_ollama_chat_stream(problems):
    def check(chunks):
        return [] if chunks[-1]["done"] and chunks[-1]["eval_count"] else ["no final counts"]

    miss_then_hit(
        lambda: dumps(OLLAMA.chat(model=OLLAMA_MODEL, messages=chat_messages("stream"), stream=True)),
        OLLAMA_VOLATILE,
        problems,
        check,
    )


def case_ollama_generate(problems):
    miss_then_hit(
        lambda: [dump(OLLAMA.generate(model=OLLAMA_MODEL, prompt=unique("generate"), stream=False))],
        OLLAMA_VOLATILE,
        problems,
    )


def case_ollama_tool_chat(problems):
    def call():
        return [
            dump(
                OLLAMA.chat(
                    model=OLLAMA_MODEL,
                    messages=chat_messages("What is the weather in Paris?"),
                    tools=[WEATHER_TOOL],
                    stream=False,
                )
            )
        ]

    def check(parsed):
        calls = parsed[0]["message"]["tool_calls"] or []
        ok = len(calls) == 1 and calls[0]["function"]["arguments"] == {"city": "Paris"}
        return [] if ok else [f"tool calls {calls!r}"]

    miss_then_hit(call, OLLAMA_VOLATILE, problems, check)


def case_ollama_stream_entry_for_json(problems):
    messages = chat_messages("an ollama stream first, then json")
    replayed_in_other_mode(
        lambda: dumps(OLLAMA.chat(model=OLLAMA_MODEL, messages=messages, stream=True)),
        lambda: [dump(OLLAMA.chat(model=OLLAMA_MODEL, messages=messages, stream=False))],
        lambda: [dump(OLLAMA_OFF.chat(model=OLLAMA_MODEL, messages=messages, stream=False))],
        OLLAMA_VOLATILE,
        problems,
    )


CASES = [
    ("openai chat", case_openai_chat),
    ("openai chat stream", case_openai_chat_stream),
    ("openai chat stream with usage", case_openai_chat_stream_usage),
    ("openai tool call stream", case_openai_tool_stream),
    ("openai tool call", case_openai_tool),
    ("openai completion", case_openai_completion),
    ("openai completion stream", case_openai_completion_stream),
    ("openai json entry for a stream", case_openai_json_entry_for_a_stream),
    ("openai stream entry for json", case_openai_stream_entry_for_json),
    ("openai tool json entry for the stream helper", case_openai_tool_json_entry_for_the_stream_helper),
    ("ollama chat", case_ollama_chat),
    ("ollama chat stream", case_ollama_chat_stream),
    ("ollama generate", case_ollama_generate),
    ("ollama tool call", case_ollama_tool_chat),
    ("ollama stream entry for json", case_ollama_stream_entry_for_json),
]


def main():
    passed = failed = 0
    for name, case in CASES:
        problems = []
        try:
            case(problems)
        except Exception:  # a client error is a failure of this case, not of the run
            problems.append(traceback.format_exc())
        if problems:
            failed += 1
            print(f"FAIL {name}: " + "\n    ".join(problems))
        else:
            passed += 1
            print(f"ok {name}")
    print(f"upstream calls {UPSTREAM_CALLS}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
