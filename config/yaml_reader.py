"""YAML configuration text to plain data, with errors that never quote the text.

The subscriber file holds signing secrets, so a mistake anywhere in it may sit
on a secret's line.  PyYAML's own messages print that line (a snippet under
the problem mark) and quote tag, alias and anchor names taken from the input;
every error raised here names the source, the line and column, and at most a
key the schema knows, never a value.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from config.errors import ConfigError

# Quoted fragments PyYAML puts in its messages (they are %r of input text).
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
# Worth keeping: token names ('<scalar>'), and one punctuation, blank or
# escaped control character ('\t', ','), which point at syntax, not at a value.
_HARMLESS = re.compile(r"<[a-z ]+>|[^\w\\]|\\[a-z]|\\x[0-9a-f]{2}|\\u[0-9a-f]{4}")
_HIDDEN = "'***'"

# Real subscriber files nest 5 levels deep and hold ~15 values per subscriber
# (1,000 subscribers, the scale docs/performance.md measures, are ~15,000).
# Aliases can make a few hundred bytes stand for billions of values, which
# the checks after loading would walk for minutes: refuse before that.
MAX_DEPTH = 64
MAX_VALUES = 100_000


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping repeats a key; ``key`` is kept apart so only known names are shown."""

    def __init__(self, key: Any, mark: yaml.Mark) -> None:
        super().__init__(None, None, "duplicate key", mark)
        self.key = key


class _LimitError(yaml.MarkedYAMLError):
    """Valid YAML, refused for its size or depth."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last,
    and nesting deeper than MAX_DEPTH (the composer recurses once per level)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call,unused-ignore]
            raise _LimitError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call,unused-ignore]
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # The scalar constructors raise plain ValueError/KeyError quoting the value
        # (e.g. `!!int s3cret`, a date like 2024-13-45): report them at their node.
        try:
            return super().construct_object(node, deep)  # type: ignore[no-untyped-call,unused-ignore]
        except (ValueError, KeyError, TypeError):
            raise yaml.constructor.ConstructorError(
                None, None, "cannot read this value as the type it has", node.start_mark
            ) from None


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value", key_node.start_mark
            ) from None
        if key in mapping:
            raise _DuplicateKeyError(key, key_node.start_mark)
        mapping[key] = loader.construct_object(value_node)
    return mapping


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type,unused-ignore]
)


def read_yaml(text: str, *, source: str, known_keys: frozenset[str] = frozenset()) -> Any:
    """The data in YAML ``text``; any mistake is one ConfigError without the text's values.

    ``source`` names the text in errors; a duplicate key is named only if it is
    one of ``known_keys`` (a key nested under a secret could be the secret).
    """
    loader: _Loader | None = None
    try:
        # The reader checks every character as the loader is made: inside the try.
        loader = _Loader(text)
        node = loader.get_single_node()  # type: ignore[no-untyped-call,unused-ignore]
        if node is None:
            return None
        _check_expanded_size(node)
        return loader.construct_document(node)  # type: ignore[no-untyped-call,unused-ignore]
    except _LimitError as exc:
        raise ConfigError(f"{source}: {_where(exc.problem_mark)}{exc.problem}") from None
    except _DuplicateKeyError as exc:
        key = f" {exc.key!r}" if exc.key in known_keys else ""
        raise ConfigError(
            f"{source}: not valid YAML: {_where(exc.problem_mark)}duplicate key{key}"
        ) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_marked(exc)}") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_unreadable(exc, text)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({type(exc).__name__})") from None
    finally:
        if loader is not None:
            loader.dispose()  # type: ignore[no-untyped-call,unused-ignore]


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document whose tree, aliases expanded, is too big or too deep.

    Walks the expanded tree itself, so the work stops at MAX_VALUES nodes
    however many an alias bomb (or an alias cycle) would stand for.
    """
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise _LimitError(
                None,
                None,
                f"more than {MAX_VALUES:,} values once aliases (*name) are expanded",
                node.start_mark,
            )
        if depth > MAX_DEPTH:
            raise _LimitError(
                None,
                None,
                f"nested more than {MAX_DEPTH} levels deep once aliases are expanded",
                node.start_mark,
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend(((key, depth + 1), (value, depth + 1)))


def _where(mark: yaml.Mark | None) -> str:
    return "" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}: "


def _masked(text: str) -> str:
    """``text`` with every quoted fragment of the input replaced, bar harmless ones."""

    def mask(match: re.Match[str]) -> str:
        return match.group(0) if _HARMLESS.fullmatch(match.group(0)[1:-1]) else _HIDDEN

    return _QUOTED.sub(mask, " ".join(text.split()))


def _marked(exc: yaml.MarkedYAMLError) -> str:
    """``line L, column C: problem (context at line L, column C)`` without snippets."""
    message = _where(exc.problem_mark) + _masked(exc.problem or "syntax error")
    if exc.context:
        context = _masked(exc.context)
        mark = exc.context_mark
        if mark is not None and _where(mark) != _where(exc.problem_mark):
            context += f" at line {mark.line + 1}, column {mark.column + 1}"
        message += f" ({context})"
    return message


def _unreadable(exc: yaml.reader.ReaderError, text: str) -> str:
    """A character YAML does not allow, by code point and place (the text is already str)."""
    line = text.count("\n", 0, exc.position) + 1
    column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
    character = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return f"line {line}, column {column}: character #x{character:04x} is not allowed"
