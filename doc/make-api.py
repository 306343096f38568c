#!/usr/bin/env python3
"""Writes doc/api.md from the public headers: each header's opening
comment, then every declaration with the comment above it. Run it after
changing include/xcm/*.h:  python3 doc/make-api.py"""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ["xcm.h", "transport.h", "route.h", "proto.h", "policy.h",
         "testkit.h", "condition.h", "error.h", "alloc.h", "log.h",
         "version.h", "export.h"]


def clean(comment):
    lines = comment.strip().splitlines()
    out = []
    for l in lines:
        l = l.strip()
        l = re.sub(r"^/\*+ ?", "", l)
        l = re.sub(r"\*+/$", "", l)
        l = re.sub(r"^\* ?", "", l)
        out.append(l.rstrip())
    return "\n".join(out).strip()


def items(text):
    """(comment, declaration) pairs at file level."""
    body = re.sub(r"#ifdef __cplusplus.*?#endif", "", text, flags=re.S)
    # The export mark is for the linker (doc/abi.md), not the reader.
    # clang-format aligned continuation lines after the mark: undo that.
    body = re.sub(r"\bXCM_EXTERN (.*?;)",
                  lambda m: m.group(1).replace("\n" + " " * 11, "\n"),
                  body, flags=re.S)
    # Constants (#define XCM_NAME value) are declarations too; include
    # guards and other preprocessor lines are not.
    body = re.sub(r"^(#define XCM_\w+[ \t]+\S.*)$", r"\1;", body,
                  flags=re.M)
    body = re.sub(r"^#(?!define XCM_\w+[ \t]+\S)(?:.*\\\n)*.*$", "", body,
                  flags=re.M)
    parts = re.split(r"(/\*.*?\*/)", body, flags=re.S)
    pending = ""
    result = []
    depth = 0
    decl = ""
    tail = "\n"  # text since the last declaration ended
    for part in parts:
        if part.startswith("/*"):
            # A comment on the line a declaration ended on belongs to it.
            if depth == 0 and not decl.strip() and "\n" not in tail:
                continue
            if depth == 0 and not decl.strip():
                pending = part
            elif depth > 0:
                decl += part
            continue
        for ch in part:
            decl += ch
            tail += ch
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == ";" and depth == 0:
                d = decl.strip()
                if d:
                    result.append((clean(pending), d))
                pending = ""
                decl = ""
                tail = ""
    return result


def main():
    out = ["# libxcm API reference", "",
           "Generated from `include/xcm/*.h` by `doc/make-api.py`; the headers "
           "are the source. Names prefixed `xcm_` are public. A function "
           "that can fail returns 0 (or a non-negative count) on success "
           "and a negative `xcm_error` otherwise, which `xcm_strerror()` "
           "names; one that returns `void` cannot fail, and one that "
           "returns a pointer says what its NULL means. Callbacks take the "
           "caller's user data first. Structs the caller hands in start "
           "with `size_t size` and structs the library fills take the "
           "caller's size, so that either can grow: see `doc/abi.md`.", ""]
    for name in ORDER:
        path = os.path.join(ROOT, "include", "xcm", name)
        text = open(path).read()
        m = re.match(r"\s*(/\*.*?\*/)", text, flags=re.S)
        out.append(f"## `xcm/{name}`")
        out.append("")
        if m:
            out.append(clean(m.group(1)))
            out.append("")
        first = True
        for comment, decl in items(text[m.end():] if m else text):
            out.append("```c")
            if decl.startswith("#define"):
                decl = decl[:-1]  # the ';' that made it one
            out.append(re.sub(r"/\*.*?\*/", "", decl, flags=re.S).strip()
                       if decl.startswith("typedef") is False else decl)
            out.append("```")
            if comment:
                out.append("")
                out.append(comment)
            out.append("")
    open(os.path.join(ROOT, "doc", "api.md"), "w").write("\n".join(out))


if __name__ == "__main__":
    main()
