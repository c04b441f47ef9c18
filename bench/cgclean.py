"""Clean-up of what a SIGKILLed supd leaves in cgroupfs, for the benches."""
import os


def cgroup_subtrees():
    """supd's subtrees on the cgroup2 hierarchies here (a SIGKILLed supd
    leaves its empty groups behind: tens of thousands of them, left over
    bench after bench, slow every later cgroup operation on the host)."""
    found = set()
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        try:
            for name in os.listdir(root):
                if name.startswith("supd-"):
                    found.add(os.path.join(root, name))
        except OSError:
            pass
    return found


def remove_empty_tree(top):
    """rmdir every group under `top`, deepest first (a populated one stays)."""
    for d, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(d)
        except OSError:
            pass
