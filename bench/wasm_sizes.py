#!/usr/bin/env python3
"""Attributes a wasm module's code size to crates: reads the code section
(the size of each function body) and the name section (each function's
mangled Rust path, legacy `_ZN...` or v0 `_R...`), groups the bytes by the
crate named first in the path, and prints JSON: {"total": bytes, "code":
bytes, "code_gzip": bytes, "describe": bytes, "crates": [[name, bytes,
functions, gzip bytes], ...]} sorted by bytes. `gzip bytes` is gzip -9 of the
crate's function bodies on their own (a guide to what removing the crate
would save in the bundle: the whole code compresses better than the sum of
its parts). wasm-bindgen's `__wbindgen_describe_*` functions are counted apart
(`describe`): wasm-bindgen runs and removes them, they never ship. Needs a
module with its name section (the compiler's output before wasm-bindgen; the
wasm-release profile keeps it). usage: wasm_sizes.py MODULE.wasm"""
import json
import re
import sys
import zlib
from collections import defaultdict


def leb(data, pos):
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def sections(data):
    pos = 8
    while pos < len(data):
        kind = data[pos]
        size, pos = leb(data, pos + 1)
        yield kind, data[pos:pos + size]
        pos += size


def imported_functions(payload):
    count, pos = leb(payload, 0)
    functions = 0
    for _ in range(count):
        for _ in range(2):  # module and field names
            length, pos = leb(payload, pos)
            pos += length
        kind = payload[pos]
        pos += 1
        if kind == 0:  # function: type index
            _, pos = leb(payload, pos)
            functions += 1
        elif kind == 1:  # table: reftype, limits
            pos += 1
            flags, pos = leb(payload, pos)
            _, pos = leb(payload, pos)
            if flags & 1:
                _, pos = leb(payload, pos)
        elif kind == 2:  # memory: limits
            flags, pos = leb(payload, pos)
            _, pos = leb(payload, pos)
            if flags & 1:
                _, pos = leb(payload, pos)
        elif kind == 3:  # global: type, mutability
            pos += 2
        elif kind == 4:  # tag
            pos += 1
            _, pos = leb(payload, pos)
    return functions


def crate_of(name):
    """The crate a function belongs to, from its mangled name: the first path
    segment, or for a trait impl (`<Type as Trait>::f`) the first crate named
    in the type. Legacy names (`_ZN<len><ident>...`) name the crate first;
    v0 names (`_R...`, the standard library's) name each crate as
    `C[s<disambiguator>_]<len><ident>`: the first one is taken."""
    if name.startswith("_R"):
        match = re.search(r"C(?:s[0-9A-Za-z]*_)?(\d+)", name[2:])
        if not match:
            return "(unnamed)"
        start = 2 + match.end()
        return name[start:start + int(match.group(1))]
    match = re.match(r"_ZN(\d+)", name)
    if not match:
        return "(unnamed)"
    first = name[match.end():match.end() + int(match.group(1))]
    if "$LT$" not in first:
        return first
    inner = first.split("$LT$", 1)[1]
    inner = re.sub(r"\$[A-Za-z0-9]+\$", " ", inner.replace("..", "::"))
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", inner):
        # Skip keywords and generic parameters (`<T as Trait>`: the trait's crate).
        if word not in ("impl", "dyn", "mut", "const", "as") and not re.fullmatch(r"[A-Z][A-Z0-9]?", word):
            return word
    return "(unnamed)"


def gzip_size(data):
    """The size of `data` compressed as gzip -9 writes it (deflate, level 9,
    plus gzip's 18 bytes of header and trailer)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return len(compressor.compress(data) + compressor.flush()) + 18


def main():
    data = open(sys.argv[1], "rb").read()
    imports = 0
    bodies = []
    names = {}
    for kind, payload in sections(data):
        if kind == 2:
            imports = imported_functions(payload)
        elif kind == 10:
            count, pos = leb(payload, 0)
            for _ in range(count):
                size, pos = leb(payload, pos)
                bodies.append(payload[pos:pos + size])
                pos += size
        elif kind == 0:
            length, pos = leb(payload, 0)
            if payload[pos:pos + length] != b"name":
                continue
            pos += length
            while pos < len(payload):
                sub = payload[pos]
                size, pos = leb(payload, pos + 1)
                end = pos + size
                if sub == 1:  # function names
                    count, p = leb(payload, pos)
                    for _ in range(count):
                        index, p = leb(payload, p)
                        length, p = leb(payload, p)
                        names[index] = payload[p:p + length].decode("utf-8", "replace")
                        p += length
                pos = end
    crates = defaultdict(lambda: [0, 0, []])
    describe = 0
    for i, body in enumerate(bodies):
        name = names.get(imports + i, "")
        if name.startswith("__wbindgen_describe"):
            describe += len(body)
            continue
        row = crates[crate_of(name)]
        row[0] += len(body)
        row[1] += 1
        row[2].append(body)
    ranked = sorted(([c, b, n, gzip_size(b"".join(parts))] for c, (b, n, parts) in crates.items()),
                    key=lambda r: -r[1])
    shipped = b"".join(body for rows in crates.values() for body in rows[2])
    print(json.dumps({"total": len(data), "code": len(shipped), "code_gzip": gzip_size(shipped),
                      "describe": describe, "named": bool(names), "crates": ranked}))


if __name__ == "__main__":
    main()
