#!/usr/bin/env python3
"""Prints one line per distinct Schemathesis failure found by contract/run.sh, across identities:
operation, failure code and title, the status received, the error code answered, and who hit it;
then, for each, one request that reproduces it.

Usage: digest.py REPORTS_DIR   (REPORTS_DIR/<identity>/junit-*.xml)
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

CASE = re.compile(r"^\d+\. Test Case ID: \S+$", re.M)
CODE = re.compile(r"^- (ST\d+) (.+)$", re.M)
RECEIVED = re.compile(r"^\[(\d{3})\] ", re.M)
ERROR_CODE = re.compile(r'"code":"([a-z_]+)"')
CURL = re.compile(r"^\s+(curl .+)$", re.M)


def main() -> None:
    found: dict[tuple[str, str, str, str], dict] = {}
    for junit in sorted(Path(sys.argv[1]).glob("*/junit-*.xml")):
        who = junit.parent.name
        for case in ET.parse(junit).getroot().iter("testcase"):
            for failure in case.iter("failure"):
                text = failure.text or ""
                for block in CASE.split(text)[1:]:
                    curls = CURL.findall(block)
                    last = curls[-1] if curls else ""
                    m = re.search(r"curl -X (\w+) .*?https?://[^/]+(/[^ ?']*)", last)
                    operation = case.get("name", "")
                    if m and not operation.startswith(("GET ", "POST ", "PUT ", "PATCH ", "DELETE ")):
                        operation = f"{m.group(1)} {re.sub(r'/[^/]*[0-9a-f]{8}-[^/]*|/%[^/]*', '/{id}', m.group(2))}"
                    status = RECEIVED.search(block)
                    error = ERROR_CODE.search(block)
                    for code, title in CODE.findall(block):
                        key = (operation, code, status.group(1) if status else "-", error.group(1) if error else "-")
                        entry = found.setdefault(key, {"title": title, "who": set(), "curl": last})
                        entry["who"].add(who)
    if not found:
        return
    print(f"{len(found)} distinct Schemathesis failure(s) (operation, check, status received, error code, identities):")
    for (operation, code, status, error), entry in sorted(found.items()):
        print(f"  {operation:34} {code} {entry['title']:36} {status} {error:24} {','.join(sorted(entry['who']))}")
    print("one reproducing request each (the last request of the case; tokens filtered):")
    for (operation, code, status, error), entry in sorted(found.items()):
        print(f"  {operation} {code} {status}: {entry['curl'][:300]}")


if __name__ == "__main__":
    main()
