#!/bin/sh
# Debian's curl. Prints the same JSON line as the other clients, built with
# python3 only to quote it (the request is curl's).
mode=$1 id=${2:-x}
url=https://api.anthropic.com/v1/messages
key=$ANTHROPIC_API_KEY
case $mode in
create) prompt=hello ;;
denied) prompt="please DENY-ME $id" ;;
held) prompt="please HOLD-ME $id" ;;
misuse) url=https://api.openai.com/v1/chat/completions prompt=hello ;;
stream) prompt="stream please CAUSAL:$id" ;;
esac
stream=false
[ "$mode" = stream ] && stream=true
body="{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"$prompt\"}]}"
if [ "$mode" = stream ]; then
	n=0
	curl -sS -N --max-time 120 "$url" -H "x-api-key: $key" -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' -d "$body" 2>/tmp/$id.err |
		while IFS= read -r line; do
			case $line in
			data:*content_block_delta*)
				n=$((n + 1))
				echo "got $n" >>/tmp/$id.log
				;;
			esac
			printf '%s\n' "$line"
		done >/tmp/$id.out
	exec python3 - "$id" <<'PY'
import json, sys
sid = sys.argv[1]
d = [json.loads(l[5:])["delta"]["text"] for l in open("/tmp/%s.out" % sid) if l.startswith("data:") and "content_block_delta" in l]
err = open("/tmp/%s.err" % sid).read()
print(json.dumps({"status": 200 if d else 0, "deltas": d, "text": "".join(d), "error": err}))
PY
fi
auth="x-api-key: $key"
[ "$mode" = misuse ] && auth="Authorization: Bearer $key"
code=$(curl -sS --max-time 120 -o /tmp/$id.out -w '%{http_code}' "$url" -H "$auth" -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' -d "$body" 2>/tmp/$id.err)
exec python3 - "$id" "$code" <<'PY'
import json, sys
sid, code = sys.argv[1], int(sys.argv[2] or 0)
body = open("/tmp/%s.out" % sid).read() if code else ""
out = {"status": code, "error": open("/tmp/%s.err" % sid).read()}
try:
    out["text"] = "".join(b["text"] for b in json.loads(body)["content"]) if code == 200 else ""
except Exception:
    out["text"] = ""
if code != 200:
    out["error"] += body[:500]
print(json.dumps(out))
PY
