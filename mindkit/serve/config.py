"""The ``serve:`` section: where the server listens and how much it takes on at once.

Every key can be overridden on the command line (``--serve.port=8001``); unknown keys are errors, since a typo in a
server option (``max_num_seq``) would otherwise silently serve with the default.
"""
import dataclasses
import typing
from typing import Optional

from mindkit.config.schema import Section, check_positive
from mindkit.errors import ConfigError


@dataclasses.dataclass
class ServeConfig(Section):
    STRICT: typing.ClassVar[bool] = True
    host: str = "127.0.0.1"
    port: int = 8000                        # 0: any free port (the log says which)
    max_num_seqs: int = 8                   # rows of the running batch (KV-cache rows)
    max_queue: int = 64                     # waiting requests beyond the batch; more get 503 + Retry-After
    api_key: Optional[str] = None           # when set, /v1/* and /yuan need "Authorization: Bearer <key>"
    max_model_len: Optional[int] = None     # prompt + completion per request (KV slots per row); default seq_length
    served_model_name: Optional[str] = None  # the name /v1/models lists; default trainer.model_name
    retry_after: int = 1                    # seconds, sent with 503 when the queue is full

    def validate(self):
        check_positive(self, "max_num_seqs", "max_queue", "max_model_len", "retry_after")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{self._key}.port", self.port, "a TCP port, 0-65535 (0: any free port)")
        if self.api_key is not None and not str(self.api_key):
            raise ConfigError(f"{self._key}.api_key", self.api_key, "a non-empty string, or null for no key")

    def context_length(self, seq_length):
        """Slots per KV-cache row: ``max_model_len`` within the model's ``seq_length``."""
        if self.max_model_len and self.max_model_len > seq_length:
            raise ConfigError(f"{self._key}.max_model_len", self.max_model_len,
                              f"at most model.model_config.seq_length ({seq_length})")
        return self.max_model_len or seq_length
