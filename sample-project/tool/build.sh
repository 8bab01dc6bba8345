#!/bin/sh
# Tags the image with a hash of its sources, then tells cmdimage-watch which ref it built.
set -eu
tag="src-$(cat Dockerfile tool.sh | cksum | cut -d' ' -f1)"
docker build --network none -t "sample-tool:$tag" .
echo "sample-tool:$tag" > ref.txt
