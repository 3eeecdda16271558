#!/bin/bash
# Check a built server image the way docs/deploy.md reports it: its size, then a container with no network at
# all (--network none) timed from `docker run` to /health answering, and one chat completion through the
# official openai client (run inside the container: nothing else can reach it). Removes the container after.
#
#   deploy/docker/check.sh [IMAGE]        # default luodi:latest
set -euo pipefail
image=${1:-luodi:latest}
key=sk-check-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
name=luodi-check-$$
echo "image $image: $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.2f GB (%.0f bytes)", $1/1e9, $1}')"
start=$(date +%s.%N)
docker run -d --rm --name "$name" --network none -e LUODI_ADMIN_KEY="$key" "$image" > /dev/null
trap 'docker rm -f "$name" > /dev/null 2>&1 || true' EXIT
for _ in $(seq 1 240); do
  if docker exec "$name" python3 -c \
      "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)" 2>/dev/null; then
    echo "/health answered $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s after docker run"
    break
  fi
  sleep 0.5
done
echo "network: $(docker inspect -f '{{.HostConfig.NetworkMode}}' "$name"), user: $(docker exec "$name" id -u)"
docker exec "$name" python3 -c "
import openai, time
c = openai.OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='$key')
t = time.monotonic()
r = c.chat.completions.create(model=c.models.list().data[0].id, max_tokens=32, temperature=0,
                              messages=[{'role': 'user', 'content': 'Say hello.'}])
print(f'chat: {r.usage.completion_tokens} tokens in {time.monotonic() - t:.2f} s: {r.choices[0].message.content!r}')
"
