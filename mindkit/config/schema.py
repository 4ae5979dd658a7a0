"""Typed config sections: plain dataclasses, validated in one place.

``Section.from_dict`` checks every value against the field's annotation and names the full key on error.
``STRICT`` sections reject unknown keys (MindFormers r1.5+: parallel_config, runner_config, recompute_config);
the others keep unknown keys in ``extras`` and log a warning, so configs written for other MindFormers models load.
"""
import dataclasses
import logging
import types
import typing

from mindkit.errors import ConfigError

logger = logging.getLogger("mindkit")

_TYPE_NAMES = {int: "an int", float: "a number", bool: "True or False", str: "a string", list: "a list",
               dict: "a mapping"}


def _describe(tp):
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    return _TYPE_NAMES.get(typing.get_origin(tp) or tp, getattr(tp, "__name__", str(tp)))


def _matches(value, tp):
    if tp is typing.Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    base = origin or tp
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is list:
        if not isinstance(value, (list, tuple)):
            return False
        (item,) = typing.get_args(tp) or (typing.Any,)
        return all(_matches(v, item) for v in value)
    return isinstance(value, base)


def check_type(key, value, tp):
    if not _matches(value, tp):
        raise ConfigError(key, value, _describe(tp))
    if typing.get_origin(tp) is None and tp is float and isinstance(value, int):
        return float(value)
    return value


def check_choice(key, value, choices):
    if value not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(map(str, choices)))
    return value


def warn_unused(key, kwargs):
    """Keys a class accepts for MindFormers compatibility but does not use: say so (a typo shows up here)."""
    if kwargs:
        logger.warning("%s: ignoring keys mindkit does not use: %s", key, ", ".join(sorted(kwargs)))


def join_key(section, name):
    return f"{section}.{name}" if section else name


def check_positive(section, *names):
    for name in names:
        value = getattr(section, name)
        if value is not None and value < 1:  # None: unset
            raise ConfigError(join_key(section._key, name), value, "an integer >= 1")


@dataclasses.dataclass
class Section:
    STRICT: typing.ClassVar[bool] = False
    extras: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    _key: str = dataclasses.field(default="", repr=False, compare=False)

    @classmethod
    def from_dict(cls, data, key=None):
        key = cls.__name__ if key is None else key
        if data is None:
            data = {}
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ConfigError(key, data, "a mapping")
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls) if f.name not in ("extras", "_key")}
        kwargs, extras = {}, {}
        for name, value in data.items():
            if name == "type":
                continue
            if name not in fields:
                if cls.STRICT:
                    raise ConfigError(join_key(key, name), value,
                                      f"one of the keys of {key}: {', '.join(sorted(fields))}")
                extras[name] = value
                continue
            kwargs[name] = check_type(join_key(key, name), value, hints[name])
        warn_unused(key or "config", extras)
        obj = cls(**kwargs, extras=extras, _key=key)
        obj.validate()
        return obj

    def validate(self):
        """Cross-field checks; raise ConfigError naming the key."""

    def to_dict(self):
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extras", "_key")}
        out.update(self.extras)
        return out
