"""Makes the installed thoonk.py 1.0.1.0 importable under Python 3.

thoonk.py 1.0.1.0 (PyPI, 2012) is Python 2 code. Three of its modules do not
import under Python 3; this rewrites those lines of the installed copy, in
place and idempotently (run it again: it changes nothing). What differs at
run time with a current redis-py is patched by thoonk3.py, not here.

  thoonk/__init__.py        `from pubsub import ...` (implicit relative import)
                            -> `from thoonk.pubsub import ...`
  thoonk/pubsub.py          `config.iteritems()` -> `config.items()`
  thoonk/feeds/pyqueue.py   `import cPickle` -> `import pickle as cPickle`

thoonk/cli.py (Python 2 print statements) is not imported by the package and
is left as it is.

Usage: python fix_thoonk.py   (with the venv's python)
"""

import importlib.util
import os
import sys

FIXES = [
    ("__init__.py", "from pubsub import", "from thoonk.pubsub import"),
    ("pubsub.py", "config.iteritems()", "config.items()"),
    (os.path.join("feeds", "pyqueue.py"), "import cPickle\n", "import pickle as cPickle\n"),
]


def main():
    spec = importlib.util.find_spec("thoonk")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("thoonk is not installed in this Python (pip install thoonk==1.0.1.0)")
    root = list(spec.submodule_search_locations)[0]
    for name, old, new in FIXES:
        path = os.path.join(root, name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if old in text:
            text = text.replace(old, new)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print("fixed %s: %s -> %s" % (name, old.strip(), new.strip()))
        elif new not in text:
            sys.exit("%s: neither %r nor %r found: not thoonk.py 1.0.1.0?" % (path, old, new))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import thoonk3  # noqa: F401  (imports thoonk with the run-time patches)
    print("thoonk.py imports under Python %d.%d" % sys.version_info[:2])


if __name__ == "__main__":
    main()
