#!/bin/bash
# Build luodi's server image: put the CPU torch wheel into the build context when this host has one (a pip
# find-links folder or a file:// index, as `make install` uses), optionally reuse the host's finished llama.cpp
# build, then `docker build`. Extra arguments go to docker build.
#
#   deploy/docker/build.sh [--reuse-llama-cache] [-t luodi:latest] [--build-arg BASE=debian:bookworm-slim] ...
set -euo pipefail
cd "$(dirname "$0")/../.."
torch_version=$(sed -n 's/^torch==//p' constraints.txt)
reuse=0
args=()
for a in "$@"; do
  if [ "$a" = --reuse-llama-cache ]; then reuse=1; else args+=("$a"); fi
done
wheels=deploy/docker/wheels
if ! compgen -G "$wheels/torch-$torch_version*.whl" > /dev/null; then
  dirs=$(pip config list 2>/dev/null | sed -n "s/.*\(find-links\|index-url\)='\(.*\)'/\2/p" | tr ' ' '\n' \
         | sed -n 's#^file://##p; /^\//p')
  for d in ${PIP_FIND_LINKS:-} $dirs; do
    found=$(find "$d" -maxdepth 3 -name "torch-$torch_version+cpu-cp311-*x86_64.whl" 2>/dev/null | head -1)
    if [ -n "$found" ]; then cp "$found" "$wheels/" && echo "torch wheel: $found"; break; fi
  done
fi
compgen -G "$wheels/torch-*.whl" > /dev/null || echo "no local CPU torch wheel: the build downloads it (TORCH_INDEX)"
# a TLS-intercepting proxy's CA (the host trusts it): the builder stage trusts it too
for c in /usr/local/share/ca-certificates/*.crt; do
  [ -e "$c" ] && cp "$c" deploy/docker/ca-certificates/ && echo "extra CA for the build: $c"
done
find deploy/docker/llama-cache -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +  # a previous --reuse's copy
if [ $reuse = 1 ]; then
  cache=${LUODI_NATIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/luodi}/llama.cpp
  for b in "$cache"/*/build.json; do
    [ -e "$b" ] || continue
    d=$(dirname "$b"); k=$(basename "$d")
    mkdir -p "deploy/docker/llama-cache/$k/src"
    cp -r "$d/lib" "$d/cpu" "$d/build.json" "deploy/docker/llama-cache/$k/"
    cp "$d"/src/llama_cpp_python-*.tar.gz "deploy/docker/llama-cache/$k/src/" 2>/dev/null || true
    echo "llama.cpp build reused if its key matches: $k"
  done
fi
[ ${#args[@]} -gt 0 ] || args=(-t luodi:latest)
exec docker build "${args[@]}" .
