"""Runs inside the build root with the build root's own Portage (not imported by clipbuild).

Reads a JSON list of CPVs on stdin; prints, for each, the metadata clipbuild keys packages on: DEPEND, BDEPEND,
INHERITED and the ebuild's path. ROOT and the Portage configuration come from the environment.
"""

import json
import sys

import portage


def main() -> None:
    cpvs = json.load(sys.stdin)
    portdb = portage.db[portage.root]["porttree"].dbapi
    out = {}
    for cpv in cpvs:
        depend, bdepend, inherited = portdb.aux_get(cpv, ["DEPEND", "BDEPEND", "INHERITED"])
        out[cpv] = {"depend": depend, "bdepend": bdepend, "inherited": inherited.split(),
                    "ebuild": portdb.findname(cpv)}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
