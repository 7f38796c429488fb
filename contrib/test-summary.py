#!/usr/bin/env python3
"""Sum googletest JSON reports into one line: 'tests: N passed, N failed, N skipped'.

A report that is missing or empty counts as a failure: a run that executed
no test must not look green.
"""
import json
import sys

passed = failed = skipped = 0
problems = []
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{path}: {e}")
        continue
    ran = 0
    for suite in report.get("testsuites", []):
        for t in suite.get("testsuite", []):
            if t.get("status") != "RUN":
                continue  # DISABLED_: run by their parent tests
            ran += 1
            if t.get("failures"):
                failed += 1
            elif t.get("result") == "SKIPPED":
                skipped += 1
                print(f"skipped: {suite['name']}.{t['name']}")
            else:
                passed += 1
    print(f"{path.rsplit('/', 1)[-1]}: {ran} tests")
    if ran == 0:
        problems.append(f"{path}: no test ran")

if not sys.argv[1:]:
    problems.append("no test report was written")
for p in problems:
    print(f"error: {p}")
print(f"tests: {passed} passed, {failed + len(problems)} failed, {skipped} skipped")
sys.exit(1 if (failed or problems) else 0)
