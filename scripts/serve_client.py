"""A small client for `run_mindformer.py --run_mode serve` (Yuan's start_inference_server_api.py equivalent).

    python scripts/serve_client.py "What is the capital of France?"                 # chat, streamed
    python scripts/serve_client.py --route completions --max_tokens 32 "Once upon a time"
    python scripts/serve_client.py --route yuan "What is the capital of France?"   # PUT /yuan, Yuan's format
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mindkit.serve import client  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prompt", nargs="+", help="one or more prompts (questions)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--route", choices=("chat", "completions", "yuan"), default="chat")
    p.add_argument("--max_tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--no_stream", action="store_true", help="wait for the whole answer")
    p.add_argument("--api_key", default=os.environ.get("MINDKIT_API_KEY"))
    args = p.parse_args(argv)
    base = f"http://{args.host}:{args.port}"
    knobs = dict(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    try:
        if args.route == "yuan":
            status, data, _ = client.request(base, "PUT", "/yuan", {
                "ques_list": [{"id": f"{i:03d}", "ques": q} for i, q in enumerate(args.prompt)],
                "tokens_to_generate": args.max_tokens, "temperature": args.temperature,
                "top_p": 0.0 if args.top_p == 1.0 else args.top_p, "top_k": args.top_k or 1}, args.api_key)
            print(json.dumps(data, ensure_ascii=False, indent=2))
            return 0 if status == 200 else 1
        for prompt in args.prompt:
            chat = args.route == "chat"
            path = "/v1/chat/completions" if chat else "/v1/completions"
            body = {**knobs, **({"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt})}
            if args.no_stream:
                data = client.post(base, path, body, args.api_key)
                choice = data["choices"][0]
                print(choice["message"]["content"] if chat else choice["text"])
                continue
            client.stream(base, path, body, args.api_key, on_event=lambda e, chat=chat: print(
                client.stream_text([e], chat).get(0, ""), end="", flush=True))
            print()
    except client.HTTPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot reach {base}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
