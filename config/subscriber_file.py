"""Reading the subscriber file: YAML, ``${VAR}`` expansion, and one located error per mistake.

The models it fills are in :mod:`config.subscribers`; this module turns text
into them and every problem into ``file: subscribers[1] (id 'x').field: why``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.errors import ConfigError
from config.subscribers import (
    CircuitBreakerOverride,
    CircuitBreakerPolicy,
    FieldProblem,
    RetryPolicy,
    SecurityPolicy,
    Subscriber,
    SubscriberFile,
)
from config.yaml_reader import read_yaml

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_KNOWN_KEYS = frozenset(
    name
    for model in (
        SubscriberFile,
        Subscriber,
        RetryPolicy,
        SecurityPolicy,
        CircuitBreakerPolicy,
        CircuitBreakerOverride,
    )
    for name in model.model_fields
)


def _describe(raw: Any, loc: tuple[str | int, ...]) -> str:
    """Human location: ``subscribers[1] (id 'my-shop'): url``."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, Mapping) and isinstance(node.get("id"), str):
                    label += f" (id {node['id']!r})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + item)
            node = node.get(item) if isinstance(node, Mapping) else None
    return "".join(parts) or "(top level)"


# Keys whose values only a signer needs: a read-only tool may go without them.
_SECRET_KEYS = frozenset({"secret", "previous_secret"})


@dataclass
class _Expansion:
    environ: Mapping[str, str]
    require_secrets: bool
    problems: list[FieldProblem] = field(default_factory=list)

    def expand(self, value: Any, loc: tuple[str | int, ...]) -> Any:
        """Replace ``${VAR}`` in string values; each missing variable is noted where it is."""
        if isinstance(value, str):

            def substitute(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in self.environ:
                    return self.environ[name]
                if not self.require_secrets and loc and loc[-1] in _SECRET_KEYS:
                    return match.group(0)  # left as written: nothing here signs
                self.problems.append(FieldProblem(loc, f"environment variable {name} is not set"))
                return match.group(0)

            return ENV_REFERENCE.sub(substitute, value)
        if isinstance(value, list):
            return [self.expand(v, (*loc, i)) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.expand(v, (*loc, str(k))) for k, v in value.items()}
        return value


def parse_subscriber_file(
    text: str,
    *,
    source: str,
    environ: Mapping[str, str] | None = None,
    require_secrets: bool = True,
) -> SubscriberFile:
    """Parse and validate subscriber-file ``text``; ``source`` names it in errors.

    Every mistake is reported, one per line of the ConfigError.  With
    ``require_secrets=False`` (tools that never sign) a secret's missing
    ``${VAR}`` is not an error.
    """
    environ = os.environ if environ is None else environ
    raw = read_yaml(text, source=source, known_keys=_KNOWN_KEYS)
    if raw is None:
        # A worker with nothing to deliver to would report "0 subscriber(s) OK" and idle.
        raise ConfigError(f"{source}: no subscribers: the file is empty or holds only comments")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with 'subscribers:'")
    expansion = _Expansion(environ, require_secrets)
    expanded = expansion.expand(raw, ())
    problems = [(p.loc, p.message) for p in expansion.problems]
    file: SubscriberFile | None = None
    try:
        file = SubscriberFile.model_validate(expanded)
    except FieldProblem as problem:
        problems.append((problem.loc, problem.message))
    except ValidationError as exc:
        missing = {loc for loc, _ in problems}
        for error in exc.errors():
            ctx_error = (error.get("ctx") or {}).get("error")
            if isinstance(ctx_error, FieldProblem):
                # Relative to the model that raised it (the file, or one subscriber).
                loc, message = (*error["loc"], *ctx_error.loc), ctx_error.message
            else:
                loc, message = tuple(error["loc"]), plain_message(error)
            if loc not in missing:  # an unset variable's placeholder is no second mistake
                problems.append((loc, message))
    if problems:
        lines = [f"{source}: {_describe(raw, loc)}: {message}" for loc, message in problems]
        raise ConfigError("\n".join(lines))
    assert file is not None
    if not file.subscribers:
        raise ConfigError(f"{source}: no subscribers: list at least one under 'subscribers:'")
    return file


def plain_message(error: Any) -> str:
    """A validation error in the project's own words (never the input, which may be a secret)."""
    kind = str(error["type"])
    # 0.0 reads as "0" to a person writing YAML.
    ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in (error.get("ctx") or {}).items()}
    words = _WORDS.get(kind)
    if words is not None:
        return words.format(**ctx)
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"needs at least {least} entries"
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} entries"
    return str(error["msg"]).removeprefix("Value error, ")


_WORDS = {
    "missing": "is required",
    "extra_forbidden": "unknown key",
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "list_type": "must be a list, e.g. [a, b]",
    "tuple_type": "must be a list, e.g. [a, b]",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
}


def load_subscriber_file(
    path: Path, environ: Mapping[str, str] | None = None, *, require_secrets: bool = True
) -> SubscriberFile:
    """Read and validate the subscriber file at ``path`` (see :func:`parse_subscriber_file`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: subscriber file not found (set WEBHOOK_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read subscriber file: {exc}") from None
    return parse_subscriber_file(
        text, source=str(path), environ=environ, require_secrets=require_secrets
    )
