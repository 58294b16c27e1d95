#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Compares two outputs of probe.py: the baseline (the C vsock stack) and the candidate (rvsock).

Usage: compare.py [--known FILE] [--junit FILE] [--results FILE] [--all] BASELINE CANDIDATE

Each input line is `<check-name> <result>` (the result may contain spaces; lines starting with
`#` and blank lines are ignored).  The tool prints a table of the checks whose results differ or
that are missing on one side, and a summary.  Exit status: 0 when every check matches (or differs
only where the known-differences file allows it), 1 otherwise, 2 on a usage or input error.

--known FILE   the allow-list of deliberate differences (default: the `known-differences` file
               next to this script, when it exists).  One check name per line, optionally
               followed by `# reason`; a name ending in `*` is a prefix.  A listed check that
               differs is reported as "known" and does not fail the comparison; a listed check
               that now matches is reported as "fixed" (a hint to trim the list).
--junit FILE   also write a JUnit XML report: one testcase per check (classname = the part
               before the first dot), with a <failure> holding both values when they differ and
               a <skipped> for a known difference.
--all          print every check in the table, not only the differing ones.
--results FILE append one line per check to FILE in the guest suite's format
               (RESULT<TAB>conformance<TAB>name<TAB>pass|fail|skip<TAB>0<TAB>-<TAB>message).
"""

import os
import sys
import xml.etree.ElementTree as ET


def parse(path):
    """Returns (ordered list of names, dict name -> result); duplicate names keep the first
    result and are reported as an input problem."""
    order, res, dups = [], {}, []
    with open(path, encoding='utf-8', errors='replace') as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip('\n')
            if not line.strip() or line.startswith('#'):
                continue
            name, _sep, value = line.partition(' ')
            if name in res:
                dups.append('%s:%d: duplicate check %s' % (path, n, name))
                continue
            order.append(name)
            res[name] = value.strip()
    return order, res, dups


def parse_known(path):
    exact, prefixes = {}, []
    if not path or not os.path.exists(path):
        return exact, prefixes
    with open(path, encoding='utf-8') as f:
        for line in f:
            body, _h, reason = line.partition('#')
            body = body.strip()
            if not body:
                continue
            name = body.split()[0]
            if name.endswith('*'):
                prefixes.append((name[:-1], reason.strip()))
            else:
                exact[name] = reason.strip()
    return exact, prefixes


def known_reason(name, exact, prefixes):
    if name in exact:
        return exact[name] or 'known difference'
    for p, r in prefixes:
        if name.startswith(p):
            return r or 'known difference'
    return None


def merged_order(a, b):
    """Baseline order, with candidate-only names inserted after their predecessor."""
    out = list(a)
    pos = {n: i for i, n in enumerate(out)}
    at = 0
    for n in b:
        if n in pos:
            at = out.index(n) + 1
        else:
            out.insert(at, n)
            pos[n] = at
            at += 1
    return out


def clip(s, w):
    return s if len(s) <= w else s[:w - 3] + '...'


def main(argv):
    args = argv[1:]
    known_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'known-differences')
    junit = None
    results = None
    show_all = False
    files = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ('-h', '--help'):
            print(__doc__)
            return 0
        if a == '--junit' and i + 1 < len(args):
            junit = args[i + 1]
            i += 2
        elif a == '--results' and i + 1 < len(args):
            results = args[i + 1]
            i += 2
        elif a == '--known' and i + 1 < len(args):
            known_path = args[i + 1]
            i += 2
        elif a == '--all':
            show_all = True
            i += 1
        elif a.startswith('-'):
            print('compare.py: unknown option %s' % a, file=sys.stderr)
            return 2
        else:
            files.append(a)
            i += 1
    if len(files) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        bo, base, d1 = parse(files[0])
        co, cand, d2 = parse(files[1])
    except OSError as e:
        print('compare.py: %s' % e, file=sys.stderr)
        return 2
    for d in d1 + d2:
        print('warning: ' + d, file=sys.stderr)
    exact, prefixes = parse_known(known_path)

    rows = []  # (name, status, baseline, candidate, reason)
    for name in merged_order(bo, co):
        b, c = base.get(name), cand.get(name)
        reason = known_reason(name, exact, prefixes)
        if b is None:
            status = 'extra'
        elif c is None:
            status = 'missing'
        elif b == c:
            status = 'fixed' if reason else 'same'
        else:
            status = 'known' if reason else 'DIFF'
        if status in ('extra', 'missing') and reason:
            status = 'known'
        rows.append((name, status, b, c, reason))

    failing = [r for r in rows if r[1] in ('DIFF', 'missing', 'extra')]
    shown = rows if show_all else [r for r in rows if r[1] != 'same']
    if shown:
        wn = min(max(len(r[0]) for r in shown), 60)
        print('%-7s  %-*s  %-40s  %s' % ('status', wn, 'check', 'baseline (C)', 'candidate'))
        print('%s  %s  %s  %s' % ('-' * 7, '-' * wn, '-' * 40, '-' * 40))
        for name, status, b, c, reason in shown:
            print('%-7s  %-*s  %-40s  %s' % (status, wn, clip(name, 60),
                                             clip('<missing>' if b is None else b, 40),
                                             '<missing>' if c is None else c))
            if len(b or '') > 40:
                print('%-7s  %-*s  baseline: %s' % ('', wn, '', b))
            if reason and status in ('known', 'fixed'):
                print('%-7s  %-*s  reason: %s' % ('', wn, '', reason))
    counts = {}
    for r in rows:
        counts[r[1]] = counts.get(r[1], 0) + 1
    print('\n%d checks: %s' % (len(rows), ', '.join('%d %s' % (v, k) for k, v in
                                                       sorted(counts.items()))))
    print('result: %s' % ('FAIL (%d differing or missing)' % len(failing) if failing else 'PASS'))

    if results:
        with open(results, 'a', encoding='utf-8') as f:
            for name, status, b, c, reason in rows:
                st = {'DIFF': 'fail', 'missing': 'fail', 'extra': 'fail', 'known': 'skip'}.get(
                    status, 'pass')
                msg = '-'
                if st == 'fail':
                    msg = 'C: %s | rvsock: %s' % (b, c)
                elif st == 'skip':
                    msg = 'known difference: %s' % reason
                msg = msg.replace('\t', ' ').replace('\n', ' ')
                f.write('RESULT\tconformance\t%s\t%s\t0\tlogs/conformance.txt\t%s\n'
                        % (name, st, msg))

    if junit:
        suite = ET.Element('testsuite', name='vsock-conformance', tests=str(len(rows)),
                           failures=str(len(failing)),
                           skipped=str(counts.get('known', 0)), errors='0')
        for name, status, b, c, reason in rows:
            cls, _dot, short = name.partition('.')
            tc = ET.SubElement(suite, 'testcase', classname='conformance.' + cls,
                               name=short or name, time='0')
            if status in ('DIFF', 'missing', 'extra'):
                msg = {'DIFF': 'result differs from the C stack',
                       'missing': 'check missing from the candidate output',
                       'extra': 'check missing from the baseline output'}[status]
                f = ET.SubElement(tc, 'failure', message=msg, type=status)
                f.text = 'baseline (C):  %s\ncandidate:     %s\n' % (
                    '<missing>' if b is None else b, '<missing>' if c is None else c)
            elif status == 'known':
                s = ET.SubElement(tc, 'skipped', message='known difference: %s' % reason)
                s.text = 'baseline (C):  %s\ncandidate:     %s\n' % (b, c)
            if status != 'same':
                so = ET.SubElement(tc, 'system-out')
                so.text = 'baseline (C):  %s\ncandidate:     %s\n' % (b, c)
        tree = ET.ElementTree(suite)
        try:
            ET.indent(tree)
        except AttributeError:
            pass
        tree.write(junit, encoding='utf-8', xml_declaration=True)
    return 1 if failing else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
