"""Chat with a model in the terminal, the conversation kept from turn to turn:

  python scripts/chat.py --config configs/smollm2/predict_smollm2_135m.yaml [--load_checkpoint ...] [--a.b.c=value]

Answers stream as they are generated; after each, one line gives the prompt length, the time to the first token and
the generation speed (what people otherwise time by hand). ``/clear`` forgets the conversation, ``/exit`` or Ctrl-D
quits. The flags are run_mindformer.py's; generation settings come from ``model.model_config`` as for predict.
When the conversation outgrows ``seq_length``, its oldest turns are forgotten.
"""
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mindkit.errors import ConfigError, MindkitError  # noqa: E402

HELP = "/clear forgets the conversation, /exit or Ctrl-D quits"


def prompt_within(conversation, query, room, seq_length):
    """The prompt ids for ``query`` leaving ``room`` tokens to answer, forgetting the oldest turns if need be."""
    ids = conversation.prompt_ids(query)
    while conversation.history and len(ids) + room > seq_length:
        conversation.history.pop(0)
        print("(the oldest turn is forgotten: the conversation outgrew seq_length)", flush=True)
        ids = conversation.prompt_ids(query)
    return ids


def chat(argv):
    from mindkit import registry
    from mindkit.cli import config_from_args
    from mindkit.generation import TextStreamer, generate
    from mindkit.generation.model_runner import ModelRunner
    from mindkit.runners.build import build_model, build_processor, start_run
    from mindkit.runners.predict import generation_config
    from mindkit.tokenizers.chat import Conversation
    config, args = config_from_args(argv)
    registry.load_register_path(args.register_path)
    if config.use_parallel:
        raise ConfigError("use_parallel", True, "False (chat runs in one process)")
    start_run(config)
    processor = build_processor(config)
    tokenizer = processor.tokenizer
    t0 = time.perf_counter()
    model = build_model(config)
    logging.getLogger("mindkit").info("model built and weights loaded in %.1f s", time.perf_counter() - t0)
    runner = ModelRunner(model, compiled=config.context.mode == 0)
    gen = generation_config(model, tokenizer, seed=config.seed)
    conversation = Conversation(tokenizer, processor.system_prompt)
    seq_length = model.config.seq_length
    print(f"mindkit chat ({HELP})", flush=True)
    while True:
        try:
            print("\nUser: ", end="", flush=True)  # input()'s own prompt goes to stderr on a terminal
            query = input().strip()
        except EOFError:
            print()
            return
        if query == "/exit":
            return
        if query == "/clear":
            conversation.clear()
            print("(conversation cleared)")
            continue
        if not query:
            continue
        try:
            ids = prompt_within(conversation, query, gen.max_new_tokens or 1, seq_length)
            print("Assistant: ", end="", flush=True)
            out = generate(model, [ids], gen, streamer=TextStreamer(tokenizer, skip_prompt=True), runner=runner)
        except MindkitError as e:  # e.g. a single question longer than seq_length: say so and go on
            print(f"\nerror: {e}", flush=True)
            continue
        conversation.add(query, tokenizer.decode(out.new_tokens[0]).strip())
        print(f"[prompt {len(ids)} tokens | first token {out.time_to_first_token:.3f} s | "
              f"{out.generated_tokens} tokens, {out.tokens_per_second:.2f} tokens/s]", flush=True)


def main(argv=None):
    from mindkit.cli import run_tool
    from mindkit.utils.log import setup_console_logging
    setup_console_logging()
    return run_tool(lambda: chat(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
