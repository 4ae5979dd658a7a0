from mindkit.checkpoint.io import load_weights, read_state, save_state

__all__ = ["load_weights", "read_state", "save_state"]
