# Debian's python3-httpx, streaming the Messages API event by event.
import json, os, sys
import httpx

mode, sid = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "x")
prompts = {"create": "hello", "stream": "stream please CAUSAL:" + sid}
headers = {"x-api-key": os.environ["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"}
body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": prompts[mode]}]}
out = {}
try:
    with httpx.Client(timeout=120) as c:
        if mode == "stream":
            body["stream"] = True
            with c.stream("POST", "https://api.anthropic.com/v1/messages", headers=headers, json=body) as r:
                out["status"] = r.status_code
                out["deltas"] = []
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    ev = json.loads(line[5:])
                    if ev.get("type") == "content_block_delta":
                        out["deltas"].append(ev["delta"]["text"])
                        with open("/tmp/%s.log" % sid, "a") as f:
                            f.write("got %d\n" % len(out["deltas"]))
                out["text"] = "".join(out["deltas"])
        else:
            r = c.post("https://api.anthropic.com/v1/messages", headers=headers, json=body)
            out["status"] = r.status_code
            if r.status_code == 200:
                out["text"] = "".join(b["text"] for b in r.json()["content"])
            else:
                out["error"] = r.text[:500]
except Exception as e:  # noqa: BLE001
    out["error"] = repr(e)[:1000]
print(json.dumps(out))
