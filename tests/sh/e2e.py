"""What the end-to-end Python tests share: their PASS/FAIL lines for tests/run.sh.

    from e2e import check, failures
    check(ok, "name", "why it failed")   # prints "PASS name" or "FAIL name: why"
    sys.exit(1 if failures() else 0)
"""
import sys

_failed = [0]


def check(ok, name, why=""):
    """One PASS/FAIL line (the reason cut to its last 3,000 characters); counts failures."""
    if ok:
        print("PASS " + name)
    else:
        _failed[0] += 1
        print("FAIL %s: %s" % (name, str(why)[-3000:]))
    sys.stdout.flush()


def failures():
    """How many checks failed so far."""
    return _failed[0]
