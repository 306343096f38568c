#!/usr/bin/python3
"""The README's hardening table, from what the tests printed.

    tests/readme-table.py --update README.md [--log FILE]... [--fuzz FILE]
                          [--allow-missing SECTION,...]
    tests/readme-table.py --check README.md  [same options]

The figures come from two places:

  * the TAP comment lines "# table ..." in the stdout of every test in a
    meson test log (JSON lines; default build/meson-logs/testlog.json,
    .ci/run's are testlog-gcc.json and so on):

      # table hostile <class> tried=N
      # table fault <case> sent=N delivered=N failed=N lost=N inflight_bound=N
      # table alloc <scenario> allocations=N injected=N sites=N
                    clean_errors=N absorbed=N setup_errors=N leaks=N

  * fuzz/results.txt, written by fuzz/run-long --results.

--update rewrites the part of the README between the markers
<!-- hardening-table: begin --> and <!-- hardening-table: end -->.
--check exits 1, saying what differs and printing a diff, when the README
does not say what the tests printed:

  * exact: hostile counts per class (and which tests tried them), the
    fault cases and their sent counts and bounds, the allocation figures
    (allocations, injected, sites, leaks), the fuzz file's figures, and the
    set of rows in every table (a row missing on either side fails);
  * by invariant, because they depend on timing: a fault case's delivered,
    failed and lost. The README shows them from the run that last updated
    it (labelled so); the check takes those from the README and requires,
    of the README's values and of the log's alike, delivered + failed +
    lost = sent and lost <= inflight_bound (so lost = 0 where the bound is
    0). The same goes for the split of injected allocation failures into
    clean errors, absorbed and setup errors, which must add up to injected;
    leaks must be 0.

A section with no line at all in the log fails, unless named in
--allow-missing (hostile, fault, alloc, fuzz): it is then shown as pending.
Exit status: 0 agreed (or updated), 1 disagreed, 2 bad usage or input.
"""

import argparse
import difflib
import json
import os
import re
import sys

BEGIN = '<!-- hardening-table: begin -->'
END = '<!-- hardening-table: end -->'
SECTIONS = ('hostile', 'fault', 'alloc', 'fuzz')

# Hostile input classes in the order the README lists them, with what each
# means. A class a test prints that is not here is listed after these,
# under its own name.
HOSTILE_CLASSES = [
    ('malformed-xml', 'malformed XML (bad characters, mismatched tags, '
     'duplicate attributes, text at depth 1, a late XML declaration, '
     'another encoding)'),
    ('restricted-xml', 'restricted XML: DTDs, entities, comments, '
     'processing instructions'),
    ('unbound-prefixes', 'undeclared prefixes and stream-level prefixes on '
     'stanzas'),
    ('invalid-utf8', 'invalid and overlong UTF-8'),
    ('length-extremes', 'names, attributes, prefixes and namespace URIs of '
     'extreme lengths and counts'),
    ('oversized', 'oversized stanzas and headers'),
    ('deep-nesting', 'deep nesting'),
    ('smuggling', 'route and handshake smuggling, hostile stream ids in a '
     'route'),
    ('markup-injection', 'markup in the strings the CM writes into protocol '
     'messages'),
    ('bad-stream-headers', 'bad stream headers (host, namespaces, version)'),
    ('malformed-messages', 'WebSocket (RFC 7395) messages that are not '
     'exactly one element (two, text beside one, a partial one, a stream '
     'header), an element before `<open/>`, a second `<open/>`'),
    ('before-auth', 'stanzas before authentication'),
    ('before-tls', 'SASL, stanzas, iq:auth and registration before TLS '
     'when TLS is required'),
    ('forged-answers', "answers the CM must not act on: a legacy auth "
     "error's id reused, a bind error echoing a forged JID, pending ids "
     "reused, too many requests"),
    ('not-allowed-elements', 'elements a client may not send'),
    ('namespace-declarations', 'stanzas with more namespace declarations '
     'than any fixed record holds, the default or a header prefix '
     'redeclared after them (the route framing must not write one twice)'),
    ('tree-shapes', 'elements shaped to make tree building quadratic '
     '(text mixed with children, 65,000 siblings, deep nesting) at the '
     'size limit and over the tree cap'),
    ('forged-queued-messages', 'message bodies carrying CDATA that looks '
     "like another user's message, in the queue of a client that is dropped"),
    ('upstream-witness', 'bytes a CM must never send upstream, each caught by '
     "the testkit's strict witness"),
    ('silent-connections', 'connections that never send a stream header'),
    ('connection-limits', 'connections past the default per-address limit'),
    ('proxy-headers', 'PROXY protocol headers (v1 and v2) that are malformed, too long, truncated, of another version or command, or missing on a listener that requires one, and valid ones from a source not in proxy_trusted'),
    ('rate-flood', 'floods above the rate in stanzas or bytes per second: '
     'shaped (reads paused until the budget refills), all delivered in '
     'order, never disconnected'),
    ('guessed-stream-ids', "guessed stream ids (near a live session's own)"),
    ('stream-id-randomness', 'stream ids checked: 128 random bits, all '
     'distinct, every bit varying'),
    ('malformed-http', 'malformed HTTP requests (bad request lines, header '
     'names, smuggling: two Hosts, Content-Length with Transfer-Encoding), '
     'refused WebSocket upgrades (subprotocol, Origin, key, version) and '
     'CORS requests from origins not allowed'),
    ('zlib-bombs', 'zlib bombs'),
    ('corrupt-zlib', 'corrupt zlib streams'),
    ('tls-garbage', 'not TLS on a TLS port'),
    ('bad-certificates', "bad peer certificates (host, dates, issuer)"),
    ('hostile-upstream', "malformed routes and configuration pushes from "
     "upstream"),
    ('bad-configs', 'bad configurations (xcmd.conf, manager.xml, TLS files)'),
    ('websocket-frames', 'WebSocket frames that break RFC 6455 or RFC 7395 '
     '(unmasked, binary, invalid UTF-8, over the message limit whole or in '
     'fragments, oversized or fragmented control frames, reserved bits and '
     'opcodes, lengths not in their shortest form, bad close codes), each '
     'closed with its status code'),
    ('slow-reader', 'a WebSocket client that stops reading while a TCP '
     'client floods it, then is dropped past max_client_out or resets: '
     'every message read or returned with `<failed/>`, once and in order, '
     'none lost but what the kernel held; the sender unharmed'),
    ('bosh-requests', 'BOSH requests that break XEP-0124 or XEP-0206: a rid '
     'beyond the window, an unknown or ended sid (legacy and 1.6 clients), '
     'bodies that are not one (unterminated, another root, no or a bad rid, '
     'data after it, a DTD, a comment, an unbound prefix, over the size '
     'limit), an element the client may not send, more requests at once '
     'than allowed, sessions past the per-address limit, a client that '
     'stops polling, a missing or wrong key (XEP-0124 section 15)'),
    ('fuzz-regressions', 'fuzz regressions replayed (tests/regress/)'),
]

# The fields of each line kind: exact ones must match the README, recorded
# ones vary with timing and are checked by invariants.
FAULT_EXACT = ('sent', 'inflight_bound')
FAULT_RECORDED = ('delivered', 'failed', 'lost')
ALLOC_EXACT = ('allocations', 'injected', 'sites', 'leaks')
ALLOC_RECORDED = ('clean_errors', 'absorbed', 'setup_errors')
FUZZ_FIELDS = ('seconds', 'executions', 'execs_per_sec', 'corpus', 'cov',
               'crashes', 'exit')

LINE_RE = re.compile(r'^# table (\S+) (\S+)((?: [a-z_]+=\S+)*)\s*$')
KV_RE = re.compile(r'([a-z_]+)=(\S+)')


class InputError(Exception):
    pass


def parse_fields(text, want, where):
    fields = dict(KV_RE.findall(text))
    missing = [k for k in want if k not in fields]
    extra = [k for k in fields if k not in want]
    if missing or extra:
        raise InputError(f'{where}: fields {sorted(fields)} are not '
                         f'{list(want)}')
    out = {}
    for k in want:
        if not re.fullmatch(r'\d+', fields[k]):
            raise InputError(f'{where}: {k}={fields[k]} is not a count')
        out[k] = int(fields[k])
    return out


def read_logs(paths):
    """{'hostile': {class: {test: n}}, 'fault': {case: {...}},
    'alloc': {scenario: {...}}} from meson test logs."""
    data = {'hostile': {}, 'fault': {}, 'alloc': {}}
    seen_tests = {}
    for path in paths:
        try:
            f = open(path, encoding='utf-8', errors='replace')
        except OSError as e:
            raise InputError(f'cannot read the test log: {e}')
        with f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    t = json.loads(line)
                except ValueError as e:
                    raise InputError(f'{path}:{lineno}: not JSON: {e}')
                # "libxcm:unit / client" is the test "client".
                name = t.get('name', '?').split(' / ')[-1]
                if name in seen_tests:
                    raise InputError(f'test {name} is in the logs twice '
                                     f'({seen_tests[name]} and {path})')
                seen_tests[name] = path
                for out in (t.get('stdout') or '').splitlines():
                    if not out.startswith('# table '):
                        continue
                    where = f'{path}: test {name}: "{out}"'
                    m = LINE_RE.match(out)
                    if not m:
                        raise InputError(f'{where}: not a table line')
                    kind, key, rest = m.groups()
                    if kind == 'hostile':
                        n = parse_fields(rest, ('tried',), where)['tried']
                        per = data['hostile'].setdefault(key, {})
                        if name in per:
                            raise InputError(f'{where}: class printed twice')
                        per[name] = n
                    elif kind == 'fault':
                        if key in data['fault']:
                            raise InputError(f'{where}: case printed twice')
                        v = parse_fields(rest, ('sent',) + FAULT_RECORDED +
                                         ('inflight_bound',), where)
                        v['test'] = name
                        data['fault'][key] = v
                    elif kind == 'alloc':
                        if key in data['alloc']:
                            raise InputError(f'{where}: scenario printed '
                                             f'twice')
                        v = parse_fields(rest, ALLOC_EXACT[:3] +
                                         ALLOC_RECORDED + ('leaks',), where)
                        v['test'] = name
                        data['alloc'][key] = v
                    else:
                        raise InputError(f'{where}: unknown table "{kind}"')
    if not seen_tests:
        raise InputError(f'no tests in {", ".join(paths)}')
    return data


def read_fuzz(path):
    """(run info dict, [target dicts]) from fuzz/results.txt, or None."""
    if not os.path.exists(path):
        return None
    info, targets = {}, []
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip('\n')
            if not line or line.startswith('#'):
                continue
            where = f'{path}:{lineno}'
            if line.startswith('run '):
                for k, v in re.findall(r'([a-z]+)=("[^"]*"|\S+)', line[4:]):
                    info[k] = v.strip('"')
            elif line.startswith('target='):
                m = re.match(r'target=(\S+)(.*)$', line)
                v = parse_fields(m.group(2), FUZZ_FIELDS, where)
                v['target'] = m.group(1)
                targets.append(v)
            else:
                raise InputError(f'{where}: not a run or target line')
    for k in ('date', 'machine', 'command'):
        if k not in info:
            raise InputError(f'{path}: no "{k}" on a run line')
    if not targets:
        raise InputError(f'{path}: no target lines')
    return info, targets


def num(n):
    return f'{n:,}'


def cell(text):
    return str(text).replace('|', '\\|')


# ---- the README's own values for what varies with timing ----------------

ROW_RE = re.compile(r'^\| `([^`]+)` \|(.*)\|\s*$')


def readme_rows(section, heading):
    """{key: [cells]} of the table under the '### heading' in section."""
    rows, inside = {}, False
    for line in section.splitlines():
        if line.startswith('### '):
            inside = line[4:].strip() == heading
            continue
        if inside:
            m = ROW_RE.match(line)
            if m:
                rows[m.group(1)] = [c.strip().replace(',', '')
                                    for c in m.group(2).split('|')]
    return rows


def recorded_from_readme(section):
    """The README's delivered/failed/lost and allocation outcome split,
    for the rows the log also has: the check keeps them."""
    rec = {'fault': {}, 'alloc': {}}
    for key, cells in readme_rows(section, 'Faults injected').items():
        # case | sent | delivered | failed | lost | bound | test
        try:
            rec['fault'][key] = dict(zip(FAULT_RECORDED,
                                         (int(c) for c in cells[1:4])))
        except (ValueError, IndexError):
            pass
    for key, cells in readme_rows(section,
                                  'Allocation failures injected').items():
        # scenario | allocations | sites | injected | clean | absorbed |
        # setup | leaks | test
        try:
            rec['alloc'][key] = dict(zip(ALLOC_RECORDED,
                                         (int(c) for c in cells[3:6])))
        except (ValueError, IndexError):
            pass
    return rec


# ---- invariants -----------------------------------------------------------

def fault_problems(case, v, whose):
    p = []
    total = v['delivered'] + v['failed'] + v['lost']
    if total != v['sent']:
        p.append(f'fault {case} ({whose}): delivered {v["delivered"]} + '
                 f'failed {v["failed"]} + lost {v["lost"]} = {total}, '
                 f'not sent {v["sent"]}')
    if v['lost'] > v['inflight_bound']:
        p.append(f'fault {case} ({whose}): lost {v["lost"]} is more than '
                 f'the bound {v["inflight_bound"]}')
    return p


def alloc_problems(name, v, whose):
    p = []
    total = sum(v[k] for k in ALLOC_RECORDED)
    if total != v['injected']:
        p.append(f'alloc {name} ({whose}): clean errors {v["clean_errors"]}'
                 f' + absorbed {v["absorbed"]} + setup errors '
                 f'{v["setup_errors"]} = {total}, not injected '
                 f'{v["injected"]}')
    if v['leaks'] != 0:
        p.append(f'alloc {name} ({whose}): {v["leaks"]} leaks')
    return p


# ---- rendering ------------------------------------------------------------

def render(data, fuzz, allow_missing, recorded):
    """The section's text (between the markers) and the problems found."""
    problems = []
    out = ['<!-- Generated by tests/readme-table.py --update README.md from '
           'the test log and fuzz/results.txt; .ci/run fails when this '
           'section and the tests disagree. Do not edit by hand. -->', '']

    # Hostile inputs.
    out.append('### Hostile inputs')
    out.append('')
    hostile = data['hostile']
    if not hostile:
        if 'hostile' not in allow_missing:
            problems.append('hostile: no "# table hostile" line in the log')
        out += ['Pending: no test printed a `# table hostile` line.', '']
    else:
        out.append('Counted by the tests as they run: an input counts in '
                   'its class only when every check on it passed '
                   '(`# table hostile` lines in the TAP output). Exact: '
                   'the check fails on any difference.')
        out.append('')
        out.append('| class | what | tried | tests |')
        out.append('|---|---|---:|---|')
        known = [c for c, _ in HOSTILE_CLASSES]
        desc = dict(HOSTILE_CLASSES)
        order = [c for c in known if c in hostile] + \
            sorted(c for c in hostile if c not in desc)
        total = 0
        for c in order:
            n = sum(hostile[c].values())
            total += n
            if n == 0:
                problems.append(f'hostile {c}: tried 0 (every input of the '
                                f'class failed its checks)')
            out.append(f'| `{c}` | {cell(desc.get(c, ""))} | {num(n)} | '
                       f'{", ".join(sorted(hostile[c]))} |')
        out.append(f'| **all classes** | | **{num(total)}** | |')
        out.append('')

    # Faults.
    out.append('### Faults injected')
    out.append('')
    fault = data['fault']
    if not fault:
        if 'fault' not in allow_missing:
            problems.append('fault: no "# table fault" line in the log')
        out += ['Pending: no test printed a `# table fault` line yet '
                '(`tests/test-fault.c` will).', '']
    else:
        out.append('Messages in each fault case. Sent and the bound on '
                   'lost messages (those in flight on a connection that '
                   'died) are exact; delivered, failed (returned with '
                   '`<failed/>` and stored offline) and lost depend on '
                   'timing and are those of the recorded run that last '
                   'updated this table. The check requires, of every run, '
                   'delivered + failed + lost = sent and lost ≤ bound.')
        out.append('')
        out.append('| case | sent | delivered (recorded) | failed '
                   '(recorded) | lost (recorded) | bound on lost | test |')
        out.append('|---|---:|---:|---:|---:|---:|---|')
        for case in sorted(fault):
            v = dict(fault[case])
            problems += fault_problems(case, v, 'this run')
            if case in recorded['fault']:
                v.update(recorded['fault'][case])
                problems += fault_problems(case, v, 'README')
            out.append(f'| `{case}` | {num(v["sent"])} | '
                       f'{num(v["delivered"])} | {num(v["failed"])} | '
                       f'{num(v["lost"])} | {num(v["inflight_bound"])} | '
                       f'{v["test"]} |')
        out.append('')

    # Allocation failures.
    out.append('### Allocation failures injected')
    out.append('')
    alloc = data['alloc']
    if not alloc:
        if 'alloc' not in allow_missing:
            problems.append('alloc: no "# table alloc" line in the log')
        out += ['Pending: no test printed a `# table alloc` line yet '
                '(`tests/test-alloc.c` will).', '']
    else:
        out.append('Each scenario runs once to count its allocations, then '
                   'again with failures injected. Allocations, sites, '
                   'injected and leaks are exact (leaks must be 0); how the '
                   'injected failures ended is from the recorded run and '
                   'must add up to injected.')
        out.append('')
        out.append('| scenario | allocations | sites | injected | clean '
                   'errors (recorded) | absorbed (recorded) | setup errors '
                   '(recorded) | leaks | test |')
        out.append('|---|---:|---:|---:|---:|---:|---:|---:|---|')
        for name in sorted(alloc):
            v = dict(alloc[name])
            problems += alloc_problems(name, v, 'this run')
            if name in recorded['alloc']:
                v.update(recorded['alloc'][name])
                problems += alloc_problems(name, v, 'README')
            out.append(f'| `{name}` | {num(v["allocations"])} | '
                       f'{num(v["sites"])} | {num(v["injected"])} | '
                       f'{num(v["clean_errors"])} | {num(v["absorbed"])} | '
                       f'{num(v["setup_errors"])} | {num(v["leaks"])} | '
                       f'{v["test"]} |')
        out.append('')

    # Fuzzing.
    out.append('### Fuzzing')
    out.append('')
    if fuzz is None:
        if 'fuzz' not in allow_missing:
            problems.append('fuzz: no results file')
        out += ['Pending: no `fuzz/results.txt`.', '']
    else:
        info, targets = fuzz
        out.append(f'From `fuzz/results.txt`: {info["date"]}, '
                   f'{info["machine"]}'
                   + (f', {info["clang"]}' if 'clang' in info else '')
                   + f'; `{info["command"]}`, one target after another.')
        out.append('')
        out.append('| target | seconds | executions | per second | corpus '
                   '| blocks covered | crashes |')
        out.append('|---|---:|---:|---:|---:|---:|---:|')
        secs = execs = 0
        for t in targets:
            secs += t['seconds']
            execs += t['executions']
            if t['crashes'] or t['exit']:
                problems.append(f'fuzz {t["target"]}: {t["crashes"]} '
                                f'crash(es), exit {t["exit"]}')
            out.append(f'| `{t["target"]}` | {num(t["seconds"])} | '
                       f'{num(t["executions"])} | {num(t["execs_per_sec"])} '
                       f'| {num(t["corpus"])} | {num(t["cov"])} | '
                       f'{num(t["crashes"])} |')
        out.append(f'| **all** | **{num(secs)}** | **{num(execs)}** | | | | '
                   f'|')
        out.append('')
    return '\n'.join(out), problems


def split_readme(text, path):
    b, e = text.find(BEGIN), text.find(END)
    if b < 0 or e < 0 or e < b:
        raise InputError(f'{path}: no "{BEGIN}" ... "{END}" section')
    start = b + len(BEGIN)
    return text[:start], text[start:e], text[e:]


def explain(old, new):
    """One line per row that differs, by its first cell."""
    def rows(text):
        r, head = {}, ''
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith('### '):
                head = line[4:]
            elif line.startswith('| ') and not (
                    i + 1 < len(lines) and lines[i + 1].startswith('|---')):
                r[(head, line.split('|')[1].strip())] = line
        return r
    a, b = rows(old), rows(new)
    msgs = []
    for k in b:
        if k not in a:
            msgs.append(f'{k[0]}: row {k[1]} is not in the README')
        elif a[k] != b[k]:
            msgs.append(f'{k[0]}: row {k[1]}: README has "{a[k]}", the '
                        f'tests say "{b[k]}"')
    for k in a:
        if k not in b:
            msgs.append(f'{k[0]}: row {k[1]} is in the README but not in '
                        f'what the tests printed')
    return msgs


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(
        description='Render or check the README hardening table.')
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument('--update', metavar='README')
    mode.add_argument('--check', metavar='README')
    ap.add_argument('--log', action='append', metavar='FILE',
                    help='meson test log, JSON lines (repeatable; default '
                    'build/meson-logs/testlog.json)')
    ap.add_argument('--fuzz', metavar='FILE',
                    default=os.path.join(root, 'fuzz', 'results.txt'))
    ap.add_argument('--allow-missing', default='', metavar='SECTIONS',
                    help='comma-separated: hostile,fault,alloc,fuzz')
    a = ap.parse_args()
    allow = {s for s in a.allow_missing.split(',') if s}
    bad = allow - set(SECTIONS)
    if bad:
        ap.error(f'--allow-missing: unknown section(s) {sorted(bad)}')
    logs = a.log or [os.path.join(root, 'build', 'meson-logs',
                                  'testlog.json')]
    readme = a.update or a.check
    try:
        data = read_logs(logs)
        fuzz = read_fuzz(a.fuzz)
        with open(readme, encoding='utf-8') as f:
            text = f.read()
        head, section, tail = split_readme(text, readme)
    except (InputError, OSError) as e:
        print(f'readme-table: {e}', file=sys.stderr)
        return 2

    if a.update:
        body, problems = render(data, fuzz, allow,
                                {'fault': {}, 'alloc': {}})
        new = head + '\n' + body + '\n' + tail
        if new != text:
            with open(readme, 'w', encoding='utf-8') as f:
                f.write(new)
            print(f'readme-table: updated {readme}')
        else:
            print(f'readme-table: {readme} was already up to date')
        for p in problems:
            print(f'readme-table: PROBLEM: {p}', file=sys.stderr)
        return 1 if problems else 0

    body, problems = render(data, fuzz, allow,
                            recorded_from_readme(section))
    want = '\n' + body + '\n'
    msgs = list(problems)
    if section != want:
        msgs += explain(section, want) or ['the section\'s text differs']
    if not msgs:
        print(f'readme-table: {readme} agrees with {", ".join(logs)} and '
              + (os.path.relpath(a.fuzz) if fuzz else 'no fuzz results')
              + (f' (allowed missing: {",".join(sorted(allow))})'
                 if allow else ''))
        return 0
    print(f'readme-table: {readme} disagrees with what the tests printed:',
          file=sys.stderr)
    for m in msgs:
        print(f'  - {m}', file=sys.stderr)
    if section != want:
        sys.stderr.writelines(difflib.unified_diff(
            section.splitlines(True), want.splitlines(True),
            f'{readme} (as it is)', 'what the tests printed'))
    print('readme-table: run the suite, then tests/readme-table.py --update '
          f'{readme} if the new figures are right', file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main())
