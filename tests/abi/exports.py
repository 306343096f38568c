#!/usr/bin/python3
"""The shared libraries export exactly the functions the public headers
mark XCM_EXTERN: libxcm everything but testkit.h, libxcm-testkit only
testkit.h. Prints TAP.

usage: exports.py SRCDIR LIBXCM_SO LIBXCM_TESTKIT_SO"""
import glob
import os
import re
import subprocess
import sys

src, libxcm, libkit = sys.argv[1:4]


def declared(headers):
    names = set()
    for h in headers:
        text = open(h).read()
        for m in re.finditer(r"^XCM_EXTERN\b[^;]*?\b(xcm_\w+)\s*\(", text,
                             re.M | re.S):
            names.add(m.group(1))
    return names


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    # Functions (T) and data (D, B, R) alike: anything a program can bind.
    return {l.split()[2] for l in out.splitlines()
            if len(l.split()) == 3 and l.split()[1] in "TDBRVW"}


headers = sorted(glob.glob(os.path.join(src, "include/xcm/*.h")))
kit_h = [h for h in headers if h.endswith("/testkit.h")]
cases = [("libxcm", libxcm, [h for h in headers if h not in kit_h]),
         ("libxcm-testkit", libkit, kit_h)]
print("1..%d" % (2 * len(cases)))
n = failed = 0
for name, lib, hs in cases:
    want, got = declared(hs), exported(lib)
    for what, diff in (("exports nothing the headers do not declare",
                        got - want),
                       ("exports everything the headers declare",
                        want - got)):
        n += 1
        if diff:
            failed += 1
            print("not ok %d - %s %s" % (n, name, what))
            for s in sorted(diff):
                print("# %s" % s)
        else:
            print("ok %d - %s %s (%d symbols)" % (n, name, what, len(want)))
sys.exit(1 if failed else 0)
