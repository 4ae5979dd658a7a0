"""A conversation → prompt ids, in the form the model was trained on: the tokenizer's own
``build_prompt(query, history)`` (ChatGLM2's ``[Round n]`` format), else its chat template (SmolLM2's ChatML), else a
plain ``User:``/``Assistant:`` transcript for tokenizers that have neither."""


class Conversation:
    def __init__(self, tokenizer, system_prompt=None):
        self.tokenizer, self.system_prompt = tokenizer, system_prompt
        self.history = []  # (query, answer) per finished turn, oldest first

    def prompt_ids(self, query):
        tok = self.tokenizer
        if hasattr(tok, "build_prompt"):
            return tok.encode(tok.build_prompt(query, list(self.history)))
        if tok.chat_template:
            return tok.apply_chat_template(self.messages(query), add_generation_prompt=True)
        return tok.encode(self.transcript(query))

    def messages(self, query):
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for q, a in self.history:
            out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return out + [{"role": "user", "content": query}]

    def transcript(self, query):
        head = f"{self.system_prompt}\n" if self.system_prompt else ""
        return head + "".join(f"User: {q}\nAssistant: {a}\n" for q, a in self.history) + f"User: {query}\nAssistant:"

    def add(self, query, answer):
        self.history.append((query, answer))

    def clear(self):
        self.history = []
