#!/usr/bin/env python3
"""Attributes a wasm module's code size to crates: reads the code section
(the size of each function body) and the name section (each function's
mangled or demangled Rust path), groups the bytes by the crate named first in
the path, and prints JSON: {"total": bytes, "code": bytes, "crates": [[name,
bytes, functions], ...]} sorted by bytes. Needs a module with its name
section (built without `strip`). usage: wasm_sizes.py MODULE.wasm"""
import json
import re
import sys
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
    """The crate a function belongs to, from its legacy-mangled name
    (`_ZN<len><ident>...`): the first path segment, or for a trait impl
    (`<Type as Trait>::f`) the first crate named in the type."""
    match = re.match(r"_ZN(\d+)", name)
    if not match:
        return "(unnamed)"
    first = name[match.end():match.end() + int(match.group(1))]
    if "$LT$" not in first:
        return first
    inner = first.split("$LT$", 1)[1]
    inner = inner.replace("$u20$", " ").replace("$RF$", "&").replace("..", "::")
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", inner):
        if word not in ("impl", "dyn", "mut", "const", "as"):
            return word
    return "(unnamed)"


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
                bodies.append(size)
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
    crates = defaultdict(lambda: [0, 0])
    for i, size in enumerate(bodies):
        crate = crate_of(names.get(imports + i, ""))
        crates[crate][0] += size
        crates[crate][1] += 1
    ranked = sorted(([c, b, n] for c, (b, n) in crates.items()), key=lambda r: -r[1])
    print(json.dumps({"total": len(data), "code": sum(bodies), "named": bool(names), "crates": ranked}))


if __name__ == "__main__":
    main()
