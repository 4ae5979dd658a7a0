"""Logging: INFO to the console, and per rank to ``{output_dir}/log/rank_{r}/info.log`` and ``error.log``."""
import logging
import os
import sys

FORMAT = "%(asctime)s - mindkit - %(levelname)s - %(message)s"
logger = logging.getLogger("mindkit")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (it may be redirected after set-up)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


def setup_console_logging(level=logging.INFO):
    if not any(getattr(h, "_mindkit_console", False) for h in logger.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter(FORMAT))
        h._mindkit_console = True
        logger.addHandler(h)
    logger.setLevel(level)
    logger.propagate = False


def log_to_files(message, exc_info=False):
    """Record an error in the run's error.log/info.log only (the console gets its own one-line message).
    Returns the error.log path; before the run set up its logs, they go to ./output/log/rank_0/."""
    handlers = [h for h in logger.handlers if getattr(h, "_mindkit_file", False)]
    if not handlers:
        setup_file_logging("./output")
        handlers = [h for h in logger.handlers if getattr(h, "_mindkit_file", False)]
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None,
                               sys.exc_info() if exc_info else None)
    for h in handlers:
        h.handle(record)
    return next(h.baseFilename for h in handlers if h.level == logging.ERROR)


def setup_file_logging(output_dir, rank=0):
    log_dir = os.path.join(output_dir, "log", f"rank_{rank}")
    os.makedirs(log_dir, exist_ok=True)
    for h in [h for h in logger.handlers if getattr(h, "_mindkit_file", False)]:
        logger.removeHandler(h)
        h.close()
    for name, level in (("info.log", logging.INFO), ("error.log", logging.ERROR)):
        h = logging.FileHandler(os.path.join(log_dir, name), encoding="utf-8")
        h.setLevel(level)
        h.setFormatter(logging.Formatter(FORMAT))
        h._mindkit_file = True
        logger.addHandler(h)
    return log_dir
