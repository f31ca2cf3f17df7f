#!/usr/bin/env python3
"""Every `.expect(` in src/ outside tests must state an invariant: `.expect("invariant: ...")`.

clippy's unwrap_used is denied outside tests (src/lib.rs, src/main.rs); clippy's expect_used
cannot tell an input-reachable expect from one guaranteed by construction, so the project's
convention is checked here instead: a value that can come from the network or a file is handled
as an error, never `expect`ed, and what remains says why it cannot fail. Test code (files under
a tests/ directory, *tests.rs, and everything after a file's `#[cfg(test)]`) is exempt.
Exit 1 with the offending places listed.
"""

import pathlib
import re
import sys

bad = []
for path in sorted(pathlib.Path("src").rglob("*.rs")):
    if "tests" in path.parts or path.name.endswith("tests.rs"):
        continue
    text = path.read_text()
    text = text.split("#[cfg(test)]", 1)[0]
    for m in re.finditer(r"\.expect\(\s*", text):
        rest = text[m.end():]
        if not rest.startswith('"invariant: '):
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{path}:{line}: expect without an \"invariant: ...\" message")
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
