"""Pure rewriting rules for serving an app under a path prefix: the Python twin of the
`portico-rewrite` crate (`plugins/rewrite`), function for function.

Each function behaves as its Rust namesake; the cases both are tested against live in
`plugins/rewrite/tests/cases.json`. Bytes stay bytes, and `None` stands for Rust's `None`.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_HELD",
    "has_prefix",
    "json_string_body",
    "media_type",
    "prefix_html_urls",
    "prefix_location",
    "replace_bytes",
    "scope_cookie_path",
    "scope_cookie_path_always",
    "stream_cut",
    "upstream_path",
]

# Rust's `str::trim` strips the Unicode `White_Space` characters; Python's `str.strip()` also
# strips U+001C to U+001F, so the set is spelled out.
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# Rust's `to_ascii_lowercase`: `str.lower()` would also fold non-ASCII letters.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _eq_ignore_ascii_case(a: str, b: str) -> bool:
    return _ascii_lower(a) == _ascii_lower(b)


def upstream_path(path: str, prefix: str, keep_prefix: bool) -> str:
    """The upstream path for `path` (the part below `prefix`, starting with `/`).

    With `keep_prefix` the app expects the whole public path, so the prefix is put back.
    """
    return prefix + path if keep_prefix else path


def has_prefix(path: str, prefix: str) -> bool:
    """True when `path` is `prefix` itself or lies below it."""
    if not path.startswith(prefix):
        return False
    rest = path[len(prefix) :]
    return rest == "" or rest[0] in "/?#"


def prefix_location(location: str, prefix: str, public_host: str) -> str | None:
    """The `Location` a client should see, or `None` to leave it unchanged.

    A root-relative location (`/login`) gets the prefix unless it already has it. An absolute
    URL (or protocol-relative one) on the public host is treated the same way, because apps
    that build absolute redirects from the `Host` header (FastAPI's slash redirects) do not
    know the prefix. Relative locations and other hosts are left alone.
    """
    if location.startswith("//"):
        fixed = _prefix_on_host(location[2:], prefix, public_host)
        return None if fixed is None else "//" + fixed
    if location.startswith("/"):
        return None if has_prefix(location, prefix) else prefix + location
    for scheme in ("http://", "https://"):
        if _eq_ignore_ascii_case(location[: len(scheme)], scheme):
            fixed = _prefix_on_host(location[len(scheme) :], prefix, public_host)
            return None if fixed is None else location[: len(scheme)] + fixed
    return None


def _prefix_on_host(rest: str, prefix: str, public_host: str) -> str | None:
    """`authority/path` with the prefix added to the path when the authority is the public
    host."""
    split = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    authority, path = rest[:split], rest[split:]
    if not _eq_ignore_ascii_case(authority, public_host):
        return None
    if path.startswith("/"):
        return None if has_prefix(path, prefix) else authority + prefix + path
    return authority + prefix + "/" + path


def scope_cookie_path(set_cookie: str, prefix: str) -> str | None:
    """A `Set-Cookie` value whose `Path` attribute is moved under the prefix, or `None` when it
    needs no change.

    Only the attribute changes; the cookie's name and value are never touched or re-encoded.
    The attribute is recognised in any case and spacing (`path = /`). A cookie without `Path`
    already defaults to the public request path, so it stays as it is.
    """
    return _scope_cookie(set_cookie, prefix, add_missing=False)


def scope_cookie_path_always(set_cookie: str, prefix: str) -> str | None:
    """As `scope_cookie_path`, and a cookie without `Path` gets `Path={prefix}`: for responses
    to requests that arrived without the prefix, whose default path would lie outside it."""
    return _scope_cookie(set_cookie, prefix, add_missing=True)


def _scope_cookie(set_cookie: str, prefix: str, *, add_missing: bool) -> str | None:
    out: list[str] = []
    changed = False
    has_path = False
    for index, part in enumerate(set_cookie.split(";")):
        if index > 0:
            out.append(";")
        name, equals, value = part.partition("=")
        if not (index > 0 and equals and _eq_ignore_ascii_case(name.strip(_WHITE_SPACE), "path")):
            out.append(part)
            continue
        has_path = True
        value = value.strip(_WHITE_SPACE)
        if not value.startswith("/") or has_prefix(value, prefix):
            out.append(part)
            continue
        lead = name[: len(name) - len(name.lstrip(_WHITE_SPACE))]
        out += [lead, name.strip(_WHITE_SPACE), "=", prefix]
        if value != "/":
            out.append(value)
        changed = True
    if add_missing and not has_path:
        out += ["; Path=", prefix]
        changed = True
    return "".join(out) if changed else None


def replace_bytes(haystack: bytes, old: bytes, new: bytes) -> bytes | None:
    """Replaces every occurrence of `old` in `haystack` with `new`; `None` when there is
    none."""
    if not old or old not in haystack:
        return None
    return bytes(haystack).replace(old, new)


def prefix_html_urls(html: bytes, prefix: str) -> bytes | None:
    """HTML whose root-relative URL attributes (`href`, `src`, `action`, `formaction`) are
    moved under the prefix, or `None` when there are none.

    Links an app renders from its own root (`<a href="/about">`, Flask's `url_for` without
    `ProxyFix`) would otherwise leave the prefix. Relative URLs, protocol-relative and absolute
    URLs, and values already under the prefix are left alone.
    """
    prefix_bytes = prefix.encode()
    out: list[bytes] = []
    last = 0
    # The Rust scan looks at every white-space byte; this looks only where a quoted
    # root-relative value starts, which finds the same places (an attribute, its `=` and the
    # quote hold no white space, so no two places overlap) in a fraction of the time, and the
    # rewrite runs against the plugin's deadline.
    for match in _ROOT_RELATIVE_VALUE.finditer(html):
        equals = match.start()
        if not _names_url_attribute(html, equals):
            continue
        start = equals + 2
        rest = start + len(prefix_bytes)
        if html.startswith(prefix_bytes, start) and html[rest : rest + 1] in _AFTER_PREFIX:
            continue
        out += [html[last:start], prefix_bytes]
        last = start
    if last == 0:
        return None
    out.append(html[last:])
    return b"".join(out)


_ROOT_RELATIVE_VALUE = re.compile(rb"=[\"']/(?!/)")
"""`="/` or `='/`, not followed by another `/`: where a root-relative attribute value starts."""

_URL_ATTRIBUTES = (b"href", b"src", b"action", b"formaction")

_ASCII_WHITE_SPACE = b" \t\n\x0c\r"
"""Rust's `is_ascii_whitespace`: no vertical tab."""

_AFTER_PREFIX = (b"", b"/", b"?", b"#", b'"', b"'")
"""What may follow the prefix in a value that is already under it (nothing: the end)."""


def _names_url_attribute(html: bytes, equals: int) -> bool:
    """True when the `=` at `equals` follows white space and a URL attribute name, in any
    case."""
    for name in _URL_ATTRIBUTES:
        begin = equals - len(name)
        if (
            begin >= 1
            and html[begin - 1] in _ASCII_WHITE_SPACE
            and html[begin:equals].lower() == name
        ):
            return True
    return False


def json_string_body(text: str) -> str:
    """`text` escaped for the inside of a JSON string in an HTML `<script>`: quotes,
    backslashes, control characters and `<` (so no `</script>` can close the element
    early)."""
    out: list[str] = []
    for c in text:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "<":
            out.append("\\u003c")
        elif c < " " or "\x7f" <= c <= "\x9f":
            # Rust's `char::is_control`: the Unicode category Cc, exactly these ranges.
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


MAX_HELD = 64 * 1024
"""The most bytes `stream_cut` leaves for a later chunk: the host's limit on held bytes."""


def stream_cut(chunk: bytes, last: bool) -> int:
    """How many leading bytes of a streamed chunk can be rewritten now, for rewrites that work
    within a line or a tag: all of them on the `last` chunk; otherwise up to and including the
    last `\\n` or `>` (0 when there is none), so that a tag or URL cut by the chunk's end waits
    for the next chunk. At most `MAX_HELD` bytes are left, so a very long line is rewritten
    in pieces."""
    if last:
        return len(chunk)
    boundary = max(chunk.rfind(b"\n"), chunk.rfind(b">")) + 1
    return max(boundary, len(chunk) - MAX_HELD)


def media_type(content_type: str) -> str:
    """The media type of a `Content-Type` value, lower case, without parameters."""
    return _ascii_lower(content_type.split(";", 1)[0].strip(_WHITE_SPACE))
