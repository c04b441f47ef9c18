"""Clean-up of what a SIGKILLed supd leaves in cgroupfs, for the benches.

Only the subtree of the supd a bench ran (named after its state directory,
as `world::cgroup::subtree_name` names it) is touched. An earlier version
removed the empty groups of every `supd-*` subtree that appeared while the
bench ran: on a shared host that included the subtrees of other supd
instances running at the same time (tests, other benches), and a test's
unit group, empty for a moment while its run was still stopping, was
removed under it (a shutdown then waited for ever; see tests/cgroup.rs
`a_unit_with_exec_stop_post_stops_when_the_command_ends_not_at_its_timeout`).
"""
import os

ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def subtree_name(state_dir):
    """supd's subtree name for a state directory (FNV-1a of the canonical
    path, as src/world/cgroup.rs `subtree_name`)."""
    state_dir = os.path.realpath(state_dir)
    if state_dir == "/var/lib/supd":
        return "supd"
    h = 0xCBF29CE484222325
    for b in os.fsencode(state_dir):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "supd-%08x" % ((h ^ (h >> 32)) & 0xFFFFFFFF)


def subtrees_of(argv):
    """The cgroup subtrees of the supd run by `argv` (none for another
    supervisor, or for a supd on the default state directory: the host's)."""
    if "--state-dir" not in argv[:-1]:
        return []
    name = subtree_name(argv[argv.index("--state-dir") + 1])
    if name == "supd":
        return []
    return [p for p in (os.path.join(r, name) for r in ROOTS) if os.path.isdir(p)]


def remove_empty_tree(top):
    """rmdir every group under `top`, deepest first (a populated one stays)."""
    for d, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(d)
        except OSError:
            pass
