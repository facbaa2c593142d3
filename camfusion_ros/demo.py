"""make demo: the package's main job, end to end on a synthetic recording."""
from __future__ import annotations

import sys


def main() -> int:
    from camfusion_ros.msg import Instance, InstanceArray
    from camfusion_ros.srv import LoadMap, QueryLabels, QueryText, SaveMap

    print("camfusion_ros interfaces:")
    for t in (Instance, InstanceArray):
        print(f"  msg {t.__name__}: " + ", ".join(f"{k}: {v}" for k, v in t.get_fields_and_field_types().items()))
    for s in (QueryLabels, QueryText, SaveMap, LoadMap):
        req = ", ".join(s.Request.get_fields_and_field_types())
        resp = ", ".join(s.Response.get_fields_and_field_types())
        print(f"  srv {s.__name__}: ({req}) -> ({resp})")
    print("mapping not built yet: the demo will replay a synthetic scene into the node once it exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
