#!/usr/bin/env python3
"""Print the reference (expected) values for scrape files as JSON.

Usage:
  gen_expected.py [FILE...]                 one JSON object {source: document};
                                            no FILE = every .txt fixture under
                                            $INFERSCALE_SHARED/fixtures (default ../shared)
  gen_expected.py --out DIR [FILE...]       one <stem>.expected.json per file in DIR
                                            (DIR must be outside the repository)
  gen_expected.py --window EARLIER LATER [--interval S]
                                            rates and windowed percentiles between
                                            two vLLM scrapes (default S = 15)
  --kind vllm|dcgm   force the kind for files outside the fixture folders
  --compact          one-line JSON

The document shape is described in NOTES.md next to this file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--out")
    ap.add_argument("--window", nargs=2, metavar=("EARLIER", "LATER"))
    ap.add_argument("--interval", type=float, default=15.0)
    ap.add_argument("--kind", choices=("vllm", "dcgm"))
    ap.add_argument("--compact", action="store_true")
    a = ap.parse_args(argv)
    indent = None if a.compact else 1

    if a.window:
        e, l = (Path(p).read_text() for p in a.window)
        print(json.dumps(reference.vllm_window(e, l, a.interval), indent=indent, allow_nan=False))
        return 0

    files = [Path(f) for f in a.files] or reference.fixture_files()
    if not files:
        print(
            f"no fixtures found under {reference.fixtures_dir()}; set INFERSCALE_SHARED "
            "to the shared/ folder (it holds fixtures/vllm and fixtures/dcgm)",
            file=sys.stderr,
        )
        return 2
    docs = OrderedDict((reference._rel(f), reference.expected_document(f, a.kind)) for f in files)
    if a.out:
        out = Path(a.out).resolve()
        if out == reference.REPO_ROOT or reference.REPO_ROOT in out.parents:
            ap.error(f"refusing to write into the repository ({out})")
        out.mkdir(parents=True, exist_ok=True)
        for f, (src, doc) in zip(files, docs.items()):
            stem = f.name[:-4] if f.name.endswith(".txt") else f.name
            (out / f"{stem}.expected.json").write_text(json.dumps(doc, indent=indent, allow_nan=False) + "\n")
        print(f"wrote {len(docs)} files to {out}", file=sys.stderr)
        return 0
    print(json.dumps(docs, indent=indent, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
