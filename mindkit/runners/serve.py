"""``run_mode: serve``: an OpenAI/vLLM-compatible HTTP server over the continuously batched engine.

Rank 0 listens (from the start, so ``/health`` answers 503 while the model loads), schedules and samples; under
msrun every rank loads its part of the model and runs the steps rank 0 broadcasts. SIGTERM (or Ctrl-C) drains:
new requests get 503, queued and running ones finish, then every rank exits.
"""
import logging
import os
import signal
import time

from mindkit.errors import ConfigError
from mindkit.registry import register
from mindkit.runners.build import build_model, build_processor, check_supported, start_run
from mindkit.serve.config import ServeConfig
from mindkit.serve.engine import Engine, share_plan
from mindkit.serve.metrics import Metrics
from mindkit.serve.protocol import ModelInfo
from mindkit.serve.scheduler import Scheduler
from mindkit.serve.server import App, start_server

logger = logging.getLogger("mindkit")


@register("runner", "serve")
class ServeRunner:
    def __init__(self, config, model=None):
        self.config, self.model = config, model
        self.server = self.app = None

    def run(self):
        cfg = self.config
        options = ServeConfig.from_dict(cfg.section("serve"), key="serve")
        if cfg.context.mode == 0:  # rows join the batch op by op (row-indexed cache writes)
            logger.warning("context.mode: serving runs op by op; using mode 1")
            cfg.context.mode = 1
        check_supported(cfg)
        if cfg.use_parallel and cfg.parallel_config.data_parallel > 1:
            raise ConfigError("parallel_config.data_parallel", cfg.parallel_config.data_parallel,
                              "1 when serving (model_parallel or pipeline_stage split one model over the ranks)")
        mesh = start_run(cfg)
        processor = build_processor(cfg)
        tokenizer = processor.tokenizer
        model_cfg = self.model.config if self.model is not None else None
        if mesh.is_main:
            self.app = self.listen(options, processor, model_cfg)
        t0 = time.perf_counter()
        model = self.model or build_model(cfg, mesh=mesh)
        model.set_train(False)
        slots = options.context_length(model.config.seq_length)
        if mesh.is_main:
            self.app.info.max_model_len = slots
            self.app.info.vocab_size = model.config.vocab_size
            self.app.info.default_max_tokens = model.config.max_new_tokens
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        engine = Engine(model, options.max_num_seqs, slots, pad)
        logger.info("model built and weights loaded in %.1f s; batch of %d rows x %d slots",
                    time.perf_counter() - t0, options.max_num_seqs, slots)
        if not mesh.is_main:
            return self.follow(engine, mesh)
        eos = set(model.config.eos_token_ids) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None
                                                 else set())
        scheduler = Scheduler(engine, mesh, self.app.metrics, options.max_queue, eos, options.retry_after)
        self.on_signals(scheduler.drain)
        self.app.scheduler = scheduler
        logger.info("ready: http://%s:%d/v1 (model %r)", *self.server.server_address[:2], self.app.info.name)
        try:
            scheduler.loop()
        finally:
            self.server.shutdown()
            self.server.server_close()
        logger.info("drained and stopped after %d decode steps", engine.decode_steps)

    def listen(self, options, processor, model_cfg):
        name = options.served_model_name or self.config.section("trainer").get("model_name") or "mindkit"
        info = ModelInfo(name, processor.tokenizer, options.max_model_len or 0, processor.tokenizer.vocab_size,
                         processor=processor)
        app = App(info, Metrics(name), options)
        try:
            self.server = start_server(app, options.host, options.port)
        except OSError as e:
            raise ConfigError("serve.port", options.port, f"a free port on {options.host}",
                              hint=str(e)) from None
        logger.info("listening on http://%s:%d, pid %d (loading the model; /health says 503 until ready)",
                    *self.server.server_address[:2], os.getpid())
        return app

    @staticmethod
    def follow(engine, mesh):
        """Other ranks: run every step rank 0 broadcasts until it says stop; SIGTERM waits for that."""
        signal.signal(signal.SIGTERM, lambda *_: logger.info("SIGTERM: waiting for rank 0 to drain"))
        while True:
            plan = share_plan(None, mesh)
            if plan.stop:
                break
            engine.run(plan)
        logger.info("rank %d stopped after %d decode steps", mesh.rank, engine.decode_steps)

    @staticmethod
    def on_signals(drain):
        def handler(signum, _):
            logger.info("%s: draining (new requests get 503)", signal.Signals(signum).name)
            drain()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
