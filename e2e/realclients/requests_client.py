# Debian's python3-requests (certifi from Debian: the system bundle).
import json, os, sys
import requests

mode, sid = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "x")
prompts = {"create": "hello", "denied": "please DENY-ME " + sid, "big": "A" * (3 << 20)}
out = {}
try:
    r = requests.post(
        "https://api.anthropic.com/v1/messages",
        headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"},
        json={"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": prompts[mode]}]},
        timeout=120,
    )
    out["status"] = r.status_code
    if r.ok:
        out["text"] = "".join(b["text"] for b in r.json()["content"])
    else:
        out["error"] = r.text[:500]
except Exception as e:  # noqa: BLE001 - report whatever the client raised
    out["error"] = repr(e)[:1000]
print(json.dumps(out))
