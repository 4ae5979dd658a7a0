"""The inference server (``run_mode: serve``): engine.py steps the model, scheduler.py batches requests,
server.py/routes.py speak HTTP (OpenAI/vLLM and Yuan routes), protocol.py validates, metrics.py counts."""
