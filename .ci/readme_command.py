"""Print the shell command in the fenced block that follows ``<!-- NAME -->`` in README.md."""

import pathlib
import re
import sys

name = sys.argv[1]
text = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
m = re.search(rf"<!-- {re.escape(name)} -->\s*```(?:bash|sh)?\n(.*?)```", text, re.DOTALL)
if not m:
    sys.exit(f"README.md has no fenced command after <!-- {name} -->")
print(" ".join(line.strip() for line in m.group(1).strip().splitlines()))
