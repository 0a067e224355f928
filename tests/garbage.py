"""Datagrams built to be costly for a general JSON parser."""

from __future__ import annotations

from trioconfd import MAGIC

#: Garbage built to be costly for a general JSON parser: each starts with the
#: magic and fills a datagram, but none is a flat object of strings.
COSTLY_GARBAGE = {
    "nesting": MAGIC + b"[" * 60000,
    "closed nesting": MAGIC + b"[" * 30000 + b"]" * 30000,
    "nesting in msg": MAGIC + b'{"msg":' + b"[" * 60000,
    "nested objects": MAGIC + b'{"a":' * 12000,
    "numbers": MAGIC + b"[" + b"1," * 30000 + b"1]",
    "big numbers": MAGIC + b'{"msg":"x","salt":' + b"9" * 60000 + b"}",
    "floats in msg": MAGIC + b'{"msg":[' + b"1e400," * 10000 + b"1]}",
    "members": MAGIC + b"{" + b",".join(b'"%d":""' % i for i in range(6000)) + b"}",
    "a complete list, then junk": MAGIC + b"[" + b"1," * 30000 + b"1] x",
    # Whitespace is read pattern by pattern between tokens, not by the string scanner.
    "whitespace": MAGIC + b"{" + b" " * 59994 + b"x",
    "spaced members": MAGIC
    + b'{ "a" : "b" , "c" : "d" , "e" : "f" , "g" : "h" , "i" : "j"'
    + b" " * 59944
    + b"x",
}
