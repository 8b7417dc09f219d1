"""The official `openai` client against phi-zoo's server on a tiny model: a completion, a streamed
completion and a streamed chat completion; greedy output equals examples/generate's ids for the
same prompt. Exits non-zero on any difference.

    python tools/check_openai_client.py            # after `cargo build --examples`
"""

import sys
import tempfile

import openai

from serve_common import generate_ids, server, tiny_model

PROMPT = "def print_prime(n):\n"
NEW_TOKENS = 24


def main():
    with tempfile.TemporaryDirectory() as scratch:
        model = tiny_model(f"{scratch}/tiny")
        expected = generate_ids(model, PROMPT, NEW_TOKENS)
        with server(model, "--api-key", "check-key") as base:
            client = openai.OpenAI(base_url=base + "/v1", api_key="check-key", max_retries=0)
            assert [m.id for m in client.models.list().data] == ["tiny"]

            completion = client.completions.create(
                model="tiny", prompt=PROMPT, max_tokens=NEW_TOKENS, temperature=0,
                logprobs=0, extra_body={"return_tokens_as_token_ids": True},
            )
            choice = completion.choices[0]
            ids = [int(t.split(":")[1]) for t in choice.logprobs.tokens]
            check(ids == expected["ids"], f"completion ids {ids} != generate's {expected['ids']}")
            check(choice.text == expected["text"], f"text {choice.text!r} != {expected['text']!r}")
            check(completion.usage.completion_tokens == NEW_TOKENS, f"usage {completion.usage}")

            pieces, finish = [], None
            for chunk in client.completions.create(
                model="tiny", prompt=PROMPT, max_tokens=NEW_TOKENS, temperature=0, stream=True,
            ):
                for c in chunk.choices:
                    pieces.append(c.text)
                    finish = c.finish_reason or finish
            check("".join(pieces) == expected["text"], f"stream {''.join(pieces)!r}")
            check(finish == "length", f"finish_reason {finish}")

            question = "What is a prime number?"
            chat_expected = generate_ids(model, f"Instruct: {question}\nOutput:", NEW_TOKENS)
            role, content = None, []
            for chunk in client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": question}],
                max_tokens=NEW_TOKENS, temperature=0, stream=True,
            ):
                delta = chunk.choices[0].delta
                role = delta.role or role
                content.append(delta.content or "")
            text = "".join(content)
            # The chat template's stop string (a new "Instruct:") may end it early.
            check(role == "assistant", f"role {role}")
            check(chat_expected["text"].startswith(text) and text, f"chat {text!r}")

            try:
                client.completions.create(model="other", prompt="x", max_tokens=1)
                check(False, "an unknown model was served")
            except openai.NotFoundError as e:
                check(e.body["code"] == "model_not_found", f"error body {e.body}")
            bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
            try:
                bad.completions.create(model="tiny", prompt="x", max_tokens=1)
                check(False, "a wrong key was accepted")
            except openai.AuthenticationError:
                pass
    print("openai client: completion, stream and chat stream match examples/generate")


def check(condition, message):
    if not condition:
        sys.exit(f"FAILED: {message}")


if __name__ == "__main__":
    main()
