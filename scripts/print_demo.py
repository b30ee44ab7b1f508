"""Print the demo users and resources from ``seed_demo --json`` (read on stdin) for people."""

import json
import sys

data = json.load(sys.stdin)
for u in data["users"]:
    print(f"    {u['role']:9} {u['username']:8} password: {u['password']:24} TOTP secret: {u['totp_secret']}")
    if u.get("backup_codes"):
        print(f"    {'':9} {'':8} or instead of a code, a backup code (each works once): "
              f"{'  '.join(u['backup_codes'])}")
print()
for r in data["resources"]:
    print(f"    {r['name'] if 'name' in r else r['slug']:20} tier {r['tier']:9} {r['kind']:4} {r['url']}")
